"""``usnav soak``: the fault and fuzz campaign, seeded and bounded, whose figures go into
docs/reliability.md beside what the trusted systems promise.

Items (each a function returning :class:`~usnav.soak.report.ItemResult`):

- :func:`usnav.soak.igtl.run_igtl` — OpenIGTLink: generated and mutated messages through the
  decoder and over real loopback TCP into the probe client, ``usnav replay``, the Slicer
  re-export server and ``usnav record``; slowloris, half-open peers, connect/disconnect storms;
- :func:`usnav.soak.files.run_files` — damaged recordings through info / convert / replay /
  register / reconstruct / calibrate;
- :func:`usnav.soak.faults.run_faults` — a killed and restarted probe server, ``usnav run``
  killed with -9 mid-recording, subscriber churn, garbage and unauthorised CURVE clients;
- :func:`usnav.soak.endurance.run_endurance` — ``usnav run`` at 30 fps with registration: RSS
  trend and latency p99, first window against last.

Not imported by anything that runs the pipeline; it drives usnav from the outside (real
processes, sockets and files), as an OR engineer would.
"""
