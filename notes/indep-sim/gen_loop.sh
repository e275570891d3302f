#!/bin/bash
# generate cases sequentially; families interleaved
cd "$(dirname "$0")"  # run from this folder: it writes cases/ here
for k in 0 1 2 3 4 5; do
  for fam in base lowfreq hifreq speckle reverb shift; do
    seed=$((2000 + k*10 + $(echo "base lowfreq hifreq speckle reverb shift" | tr ' ' '\n' | grep -n "^$fam$" | cut -d: -f1)))
    d=cases/${fam}_${seed}
    [ -f $d/READY ] && continue
    nice -n 5 /work/venv/bin/python sim.py $d $fam $seed > $d.simlog 2>&1 && /work/venv/bin/python view.py $d && touch $d/READY
    echo "$(date +%T) generated $d" >> gen.log
  done
done
echo done >> gen.log
