#!/bin/bash
# session 21: register every READY case with the preoperative MRI as it is (plain) and with each
# removed-tissue label sim.py writes (exact wound, the wound drawn 1.8 mm off along the spine,
# the removed bone only): usnav register --removed. Run from this folder; one at a time.
cd "$(dirname "$0")"
for r in cases/*/READY; do
  d=$(dirname "$r")
  for v in plain exact shift2 bone; do
    [ -f "$d/result_$v.json" ] && continue
    case $v in
      plain) extra=() ;;
      exact) extra=(--removed removed_label.nii.gz) ;;
      shift2) extra=(--removed removed_shift2.nii.gz) ;;
      bone) extra=(--removed removed_bone.nii.gz) ;;
    esac
    ( cd "$d" && nice -n 5 usnav register sweep.igs.mha --mri mri.nii.gz --calibration cal.txt \
        --init init.txt --label tumor_label.nii.gz --out "result_$v.json" --quiet --force \
        "${extra[@]}" > "reg_$v.out" 2> "reg_$v.err" )
  done
done
