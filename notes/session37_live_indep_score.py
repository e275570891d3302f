"""Session 37: issue #11's outside evaluation repeated on fresh cases of the independent simulator.

Written from docs/protocol.md alone: a raw ZeroMQ subscriber (pyzmq + msgpack, no usnav
import) records every ``margin``, ``registration`` and ``status`` message of a live run
(``usnav replay`` -> ``usnav run`` -> ZeroMQ), a second one joins late, and the scorer compares
every published margin with where the tumor really is during surgery: the independent
simulator's own surgical label volume (``anatomy.build_labels(..., surgical=True)``, fine grid
0.45 mm, cord shift included) cut by the frame's true pose (``poses_TransducerToMri.npy`` times
the simulator's image-to-transducer scaling).

Usage::

    python notes/session37_live_indep_score.py run CASE OUT [--options TOML] [--late-s S]
        [--sweeps N] [--port N]
    python notes/session37_live_indep_score.py score CASE OUT
    python notes/session37_live_indep_score.py table OUT ...

``run`` ends ``usnav run`` with two Ctrl-Cs (SIGINT to its process group, the second 0.3 s
after the first) and keeps its stdout/stderr and exit status.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq

SIM = Path(__file__).resolve().parent / "indep-sim"
REPO = Path(__file__).resolve().parent.parent
N_FRAMES = 120  # frames per sweep of the independent simulator
FRAME_PERIOD_S = 0.05
TOPICS = (b"margin", b"registration", b"status")
RUN_ARGS: list[str] = []  # more documented usnav run arguments (--run-arg)
CTRL_C_COUNT = [2]  # Ctrl-Cs that end the run (--ctrl-c)


# --------------------------------------------------------------------------- recording
class Recorder(threading.Thread):
    """A raw SUB socket: every message with its arrival time, appended to a msgpack file."""

    def __init__(self, address: str, path: Path) -> None:
        super().__init__(daemon=True)
        self.address, self.path = address, path
        self.stop_event = threading.Event()
        self.t_connect: float | None = None
        self.count = 0

    def run(self) -> None:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, 1_000_000)  # keep everything: this is a recorder
        sock.setsockopt(zmq.MAXMSGSIZE, 128 * 1024 * 1024)
        for topic in TOPICS:
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        self.t_connect = time.time()
        sock.connect(self.address)
        with open(self.path, "wb") as out:
            while not self.stop_event.is_set():
                if not sock.poll(100):
                    continue
                while True:
                    try:
                        parts = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    out.write(msgpack.packb([time.time(), parts]))
                    self.count += 1
        sock.close(linger=0)
        ctx.term()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(
    case: Path, out: Path, options: Path | None, late_s: float, sweeps: int, second_after_s: float
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as files:
        replay_out = files.enter_context(open(out / "replay.out", "w"))
        run_out = files.enter_context(open(out / "run.stdout", "w"))
        run_err = files.enter_context(open(out / "run.stderr", "w"))
        _run(case, out, options, late_s, sweeps, second_after_s, replay_out, run_out, run_err)


def _run(case, out, options, late_s, sweeps, second_after_s, replay_out, run_out, run_err) -> None:  # type: ignore[no-untyped-def]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    igtl_port, pub_port = _free_port(), _free_port()
    device = (REPO / "devices" / "plus-server.toml").read_text()
    device = device.replace("port = 18944", f"port = {igtl_port}")
    # the replay sends the recording's tracker transforms (the probe's warning says so)
    device = device.replace(
        'transforms = ["ProbeToReference", "ProbeToTracker", "ReferenceToTracker"]',
        'transforms = ["ProbeToTracker", "ReferenceToTracker"]',
    )
    (out / "device.toml").write_text(device)
    address = f"tcp://127.0.0.1:{pub_port}"
    replay = subprocess.Popen(
        [
            "usnav",
            "replay",
            str(case / "sweep.igs.mha"),
            "--port",
            str(igtl_port),
            "--loop",
            "--calibration",
            str(case / "cal.txt"),
        ],
        stdout=replay_out,
        stderr=subprocess.STDOUT,
        env=env,
    )
    early = Recorder(address, out / "early.msgs")
    early.start()
    cmd = [
        "usnav",
        "run",
        "--device",
        str(out / "device.toml"),
        "--mri",
        str(case / "mri.nii.gz"),
        "--label",
        str(case / "tumor_label.nii.gz"),
        "--calibration",
        str(case / "cal.txt"),
        "--init",
        str(case / "init.txt"),
        "--publish",
        address,
        "--quiet",
        "--log",
        str(out / "run.log"),
        "--force",
    ]
    if options is not None:
        cmd += ["--options", str(options)]
    cmd += RUN_ARGS
    t0 = time.time()
    proc = subprocess.Popen(
        cmd,
        stdout=run_out,
        stderr=run_err,
        env=env,
        start_new_session=True,
    )
    late = Recorder(address, out / "late.msgs")
    # the run is timed from the first margin the early subscriber sees (compilation first)
    while early.count == 0 and proc.poll() is None and time.time() - t0 < 120:
        time.sleep(0.1)
    t_first = time.time()
    time.sleep(max(0.0, t0 + late_s - time.time()))
    late.start()
    time.sleep(max(0.0, t_first + sweeps * N_FRAMES * FRAME_PERIOD_S - time.time()))
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's whole process group
    t_int = time.time()
    second = False
    for _ in range(CTRL_C_COUNT[0] - 1):  # the later Ctrl-Cs, while it is still stopping
        time.sleep(second_after_s)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            second = True
    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
    t_end = time.time()
    time.sleep(0.5)
    early.stop_event.set()
    late.stop_event.set()
    early.join()
    late.join()
    replay.send_signal(signal.SIGINT)
    try:
        replay.wait(timeout=10)
    except subprocess.TimeoutExpired:
        replay.kill()
    meta = dict(
        case=str(case),
        options=str(options) if options else None,
        exit=code,
        second_ctrl_c_sent=second,
        ctrl_c=CTRL_C_COUNT[0],
        second_after_s=second_after_s,
        run_args=RUN_ARGS,
        stop_s=t_end - t_int,
        t_start=t0,
        t_first_message=t_first,
        late_connect=late.t_connect,
        early_connect=early.t_connect,
        sweeps=sweeps,
        late_s=late_s,
        early_count=early.count,
        late_count=late.count,
    )
    (out / "run.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta))


# --------------------------------------------------------------------------- reading
def read_messages(path: Path) -> list[dict]:
    """Decode a recording as docs/protocol.md says: topic, msgpack header, buffers."""
    messages = []
    with open(path, "rb") as fh:
        for t_arrived, parts in msgpack.Unpacker(fh, raw=False):
            topic = parts[0].decode("ascii")
            header = msgpack.unpackb(parts[1], raw=False)
            specs = header.get("buffers", [])
            assert header["schema"] == "usnav" and header["version"] == 2, header.get("version")
            assert len(specs) == len(parts) - 2, (topic, len(specs), len(parts))
            buffers = {}
            for spec, raw in zip(specs, parts[2:], strict=True):
                array = np.frombuffer(raw, dtype=np.dtype(spec["dtype"]))
                buffers[spec["name"]] = array.reshape(spec["shape"])
            messages.append(dict(topic=topic, header=header, buffers=buffers, t=t_arrived))
    return messages


# --------------------------------------------------------------------------- truth
class Truth:
    """The independent simulator's own geometry of one case."""

    def __init__(self, case: Path) -> None:
        sys.path.insert(0, str(SIM))
        import anatomy
        import nibabel as nib
        import sim

        self.A, self.sim = anatomy, sim
        self.meta = json.loads((case / "meta.json").read_text())
        labels = anatomy.build_labels(self.meta["anatomy"], surgical=True)
        self.tumor = (labels == anatomy.TUMOR).astype(np.float32)
        self.fine_to_voxel = np.linalg.inv(anatomy.fine_affine())
        self.poses = np.load(case / "poses_TransducerToMri.npy")
        self.i2t = sim.image_to_transducer()
        self.rows, self.cols = sim.NROW, sim.NCOL
        self.sx, self.sy = sim.SX, sim.SY
        self.truth = _load_mat(case / "truth.txt")
        self.init = _load_mat(case / "init.txt")
        label = nib.load(case / "tumor_label.nii.gz")
        self.surface = anatomy.tumor_surface_points(np.asarray(label.dataobj), label.affine)
        shift = np.eye(4)
        shift[:3, 3] = -np.asarray(self.meta.get("cord_shift", [0, 0, 0]), dtype=float)
        self.tumor_truth = shift @ self.truth  # score.py's "tumour truth" (surgical tumour)
        rr, cc = np.meshgrid(np.arange(self.rows), np.arange(self.cols), indexing="ij")
        self.pixels = np.stack([cc.ravel(), rr.ravel(), np.zeros(cc.size), np.ones(cc.size)])
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def image_to_mri(self, index: int) -> np.ndarray:
        return self.poses[index] @ self.i2t

    def frame(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(tumor fraction on the frame's pixels, true boundary points in mm (K, 2))."""
        if index not in self._cache:
            from scipy import ndimage
            from skimage import measure

            voxel = self.fine_to_voxel @ self.image_to_mri(index) @ self.pixels
            values = ndimage.map_coordinates(self.tumor, voxel[:3], order=1, mode="constant")
            mask = values.reshape(self.rows, self.cols)
            points = [c for c in measure.find_contours(mask, 0.5)]
            boundary = (
                np.concatenate(points)[:, ::-1] * [self.sx, self.sy]  # (row, col) -> x, y mm
                if points
                else np.zeros((0, 2))
            )
            self._cache[index] = (mask, boundary)
        return self._cache[index]

    def mtre(self, reference_to_mri: np.ndarray, tumor: bool = True) -> float:
        """score.py's error: mean over the MRI tumor surface of |T T_truth^-1 p - p|, mm."""
        target = self.tumor_truth if tumor else self.truth
        m = np.asarray(reference_to_mri) @ np.linalg.inv(target)
        q = self.surface @ m[:3, :3].T + m[:3, 3]
        return float(np.linalg.norm(q - self.surface, axis=1).mean())


def _load_mat(path: Path) -> np.ndarray:
    values: list[float] = []
    for line in path.read_text().splitlines():
        values += [float(v) for v in line.split("#")[0].split()]
    return np.array(values).reshape(4, 4)


# --------------------------------------------------------------------------- scoring
def _distances(points_px: np.ndarray, boundary_mm: np.ndarray, sx: float, sy: float) -> np.ndarray:
    from scipy.spatial import cKDTree

    if len(boundary_mm) == 0:
        return np.full(len(points_px), np.inf)
    return cKDTree(boundary_mm).query(points_px * [sx, sy])[0]


def score_margins(truth: Truth, messages: list[dict]) -> list[dict]:
    rows = []
    for m in messages:
        if m["topic"] != "margin":
            continue
        h, b = m["header"], m["buffers"]
        number = int(h["frame_number"])
        index = number % N_FRAMES
        mask, boundary = truth.frame(index)
        true_area = float((mask >= 0.5).sum() * truth.sx * truth.sy)
        row = dict(
            seq=h["seq"],
            frame=number,
            t_published=h["t_published"],
            state=h["display_state"],
            reason=h["display_reason"],
            unc=h["uncertainty_mm"],
            checked=h["registration_checked"],
            in_view=bool(h["in_view"]),
            why_not=h.get("reason", ""),
            true_area_mm2=true_area,
            reg_seq=h.get("registration_sequence"),
        )
        if h.get("ImageToMri") is not None:
            used = np.asarray(h["ImageToMri"], dtype=float).reshape(4, 4)
            centre = used @ [truth.cols / 2, truth.rows / 2, 0, 1]
            real = truth.image_to_mri(index) @ [truth.cols / 2, truth.rows / 2, 0, 1]
            row["plane_centre_err_mm"] = float(np.linalg.norm(centre[:3] - real[:3]))
        if row["in_view"] and true_area > 0:
            drawn, mri_only, seen_pred, seen_obs = [], [], [], []
            for k in range(len(h["contours"])):
                pred = b[f"c{k}.predicted_px"].astype(float)
                obs = b[f"c{k}.observed_px"].astype(float)
                conf = b[f"c{k}.confidence"].astype(float)
                seen = conf >= 0.5
                d_pred = _distances(pred, boundary, truth.sx, truth.sy)
                d_obs = _distances(obs, boundary, truth.sx, truth.sy)
                mri_only.append(d_pred)
                drawn.append(np.where(seen, d_obs, d_pred))
                seen_pred.append(d_pred[seen])
                seen_obs.append(d_obs[seen])
            d = np.concatenate(drawn)
            p = np.concatenate(mri_only)
            row.update(
                err_mean=float(d.mean()),
                err_p95=float(np.percentile(d, 95)),
                mri_mean=float(p.mean()),
                mri_p95=float(np.percentile(p, 95)),
                n_points=int(d.size),
                seen_pred=np.concatenate(seen_pred).tolist(),
                seen_obs=np.concatenate(seen_obs).tolist(),
            )
        rows.append(row)
    return rows


def late_join(early: list[dict], late: list[dict], t_connect: float) -> dict:
    """How soon the late display learned the state and the registration in use, and was it right."""
    out: dict = dict(first_message_s=None, first_registration_s=None)
    if not late:
        return out
    first = late[0]
    out["first_message_s"] = first["t"] - t_connect
    out["first_topic"] = first["topic"]
    out["first_state"] = first["header"]["display_state"]
    # the early display's newest state at that moment, same topic: the right answer
    seq = first["header"]["seq"]
    before = [m for m in early if m["topic"] == first["topic"] and m["header"]["seq"] <= seq]
    out["early_state_then"] = before[-1]["header"]["display_state"] if before else None
    regs = [m for m in late if m["topic"] == "registration" and m["header"].get("in_use")]
    if regs:
        r = regs[0]
        out["first_registration_s"] = r["t"] - t_connect
        mine = np.asarray(r["header"]["ReferenceToMri"], dtype=float).reshape(4, 4)
        # the early display's registration in use at that message (by the topic's seq: the
        # same message reaches the two sockets microseconds apart)
        in_use = [
            m
            for m in early
            if m["topic"] == "registration"
            and m["header"].get("in_use")
            and m["header"]["seq"] <= r["header"]["seq"]
        ]
        if in_use:
            theirs = np.asarray(in_use[-1]["header"]["ReferenceToMri"], dtype=float).reshape(4, 4)
            out["registration_matches_early"] = bool(np.allclose(mine, theirs, atol=1e-9))
        out["late_reg_state"] = r["header"]["display_state"]
        out["late_reg_estimate"] = r["header"].get("estimate_sequence")
    return out


def score(case: Path, out: Path) -> dict:
    truth = Truth(case)
    early = read_messages(out / "early.msgs")
    late = read_messages(out / "late.msgs") if (out / "late.msgs").exists() else []
    meta = json.loads((out / "run.json").read_text())
    margins = score_margins(truth, early)
    scored = [r for r in margins if "err_p95" in r]
    in_view = [r for r in margins if r["in_view"]]
    live = [r for r in scored if r["state"] == "LIVE"]
    seen_pred = np.array([v for r in scored for v in r["seen_pred"]])
    seen_obs = np.array([v for r in scored for v in r["seen_obs"]])
    # "no tumor in view" while the tumor is in the plane (>= 1 mm^2, the pipeline's min area)
    missed = [r for r in margins if not r["in_view"] and r["true_area_mm2"] >= 1.0]
    missed_any = [r for r in margins if not r["in_view"] and r["true_area_mm2"] > 0]
    phantom = [r for r in margins if r["in_view"] and r["true_area_mm2"] == 0]
    regs = [m for m in early if m["topic"] == "registration"]
    estimates = [m for m in regs if not m["header"].get("resent")]
    est_rows = []
    for m in estimates:
        h = m["header"]
        t = np.asarray(h["ReferenceToMri"], dtype=float).reshape(4, 4)
        est_rows.append(
            dict(
                seq=h["estimate_sequence"],
                source=h["source"],
                in_use=h["in_use"],
                unc=h["uncertainty_mm"],
                state=h["display_state"],
                err=truth.mtre(t),
                bony_err=truth.mtre(t, tumor=False),
                reason=h["reason"][:160],
            )
        )
    in_use = [m for m in regs if m["header"].get("in_use")]
    final_err = (
        truth.mtre(np.asarray(in_use[-1]["header"]["ReferenceToMri"], dtype=float).reshape(4, 4))
        if in_use
        else None
    )
    gaps = {}
    for topic in ("margin", "registration", "status"):
        seqs = [m["header"]["seq"] for m in early if m["topic"] == topic]
        gaps[topic] = int(sum(max(0, b - a - 1) for a, b in itertools.pairwise(seqs)))
    states: dict[str, int] = {}
    for r in in_view:
        states[r["state"]] = states.get(r["state"], 0) + 1
    reasons: dict[str, int] = {}
    for r in in_view:
        key = r["reason"][:90]
        reasons[key] = reasons.get(key, 0) + 1
    stdout = (out / "run.stdout").read_text()
    stderr = (out / "run.stderr").read_text()
    result = dict(
        case=case.name,
        seed=truth.meta["seed"],
        family=truth.meta["family"],
        init_err=truth.mtre(truth.init),
        final_err=final_err,
        margins=len(margins),
        in_view=len(in_view),
        scored=len(scored),
        states_in_view=states,
        reasons_in_view=reasons,
        live=len(live),
        live_unsafe=sum(r["err_p95"] > 2.0 for r in live),
        unsafe_any_state=sum(r["err_p95"] > 2.0 for r in scored),
        mean_err=float(np.mean([r["err_mean"] for r in scored])) if scored else None,
        mean_err_mri=float(np.mean([r["mri_mean"] for r in scored])) if scored else None,
        p95_median=float(np.median([r["err_p95"] for r in scored])) if scored else None,
        seen_points=int(seen_obs.size),
        seen_err=float(seen_obs.mean()) if seen_obs.size else None,
        seen_mri_err=float(seen_pred.mean()) if seen_pred.size else None,
        seen_beat=float((seen_obs < seen_pred).mean()) if seen_obs.size else None,
        missed=len(missed),
        missed_any=len(missed_any),
        phantom=len(phantom),
        missed_states=sorted({(r["state"], r["reason"][:120]) for r in missed}),
        missed_checked=sum(bool(r["checked"]) for r in missed),
        estimates=est_rows,
        gaps=gaps,
        late=late_join(early, late, meta["late_connect"]),
        exit=meta["exit"],
        second_ctrl_c_sent=meta["second_ctrl_c_sent"],
        stdout_tail=stdout[-600:],
        stderr_tail=stderr[-600:],
        summary_printed=("frames" in (stdout + stderr).lower()),
    )
    (out / "score.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "margins.json").write_text(
        json.dumps(
            [{k: v for k, v in r.items() if k not in ("seen_pred", "seen_obs")} for r in margins]
        )
    )
    return result


def table(outs: list[Path]) -> None:
    head = (
        "| run | case | init / final mTRE mm | in-view | states | LIVE >2 mm | mean err (MRI) mm "
        "| seen pts: err vs MRI, beat | missed (checked) | late: first msg / reg s | exit |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for out in outs:
        r = json.loads((out / "score.json").read_text())
        late = r["late"]
        seen = (
            f"{r['seen_points']}: {r['seen_err']:.2f} vs {r['seen_mri_err']:.2f}, "
            f"{100 * r['seen_beat']:.0f} %"
            if r["seen_points"]
            else "0"
        )
        mean = f"{r['mean_err']:.2f} ({r['mean_err_mri']:.2f})" if r["mean_err"] else "-"
        final = f"{r['final_err']:.2f}" if r["final_err"] is not None else "-"
        lt = late.get("first_message_s")
        lr = late.get("first_registration_s")
        print(
            f"| {out.name} | {r['family']} {r['seed']} | {r['init_err']:.2f} / {final} "
            f"| {r['in_view']} | {r['states_in_view']} | {r['live_unsafe']} / {r['live']} "
            f"| {mean} | {seen} | {r['missed']} ({r['missed_checked']}) "
            f"| {lt if lt is None else round(lt, 2)} / {lr if lr is None else round(lr, 2)} "
            f"| {r['exit']} |"
        )


def details(outs: list[Path]) -> None:
    """Per run: the error by registration kind, LIVE p95s, coverage after two sweeps, misses."""
    for out in outs:
        r = json.loads((out / "score.json").read_text())
        rows = json.loads((out / "margins.json").read_text())
        scored = [m for m in rows if "err_mean" in m]
        nav = [m["err_mean"] for m in scored if not m["checked"]]
        img = [m["err_mean"] for m in scored if m["checked"]]
        live = [m["err_p95"] for m in scored if m["state"] == "LIVE"]
        first = rows[0]["frame"] if rows else 0
        later = [m for m in rows if m["in_view"] and m["frame"] - first >= 2 * N_FRAMES]
        covered = sum(m["state"] == "LIVE" for m in later)
        missed = [m for m in rows if not m["in_view"] and m["true_area_mm2"] >= 1.0]
        said = sum("may be in view" in m["reason"] for m in missed)
        phantom = [m for m in rows if m["in_view"] and not m["true_area_mm2"]]
        print(
            f"{out.name}: navigation {len(nav)} at {np.mean(nav) if nav else float('nan'):.2f} mm, "
            f"image-based {len(img)} at {np.mean(img) if img else float('nan'):.2f} mm; "
            f"LIVE p95 max {max(live) if live else float('nan'):.2f} mm (n {len(live)}); "
            f"sweeps 3-4 LIVE {covered}/{len(later)}; missed {len(missed)} "
            f"(checked {sum(bool(m['checked']) for m in missed)}, 'may be in view' {said}, "
            f"states {sorted({m['state'] for m in missed})}); phantom {r['phantom']} "
            f"states {sorted({m['state'] for m in phantom})}"
        )


def pooled(outs: list[Path]) -> dict:
    """The issue's figures over a set of runs."""
    rows = [m for out in outs for m in json.loads((out / "margins.json").read_text())]
    scores = [json.loads((out / "score.json").read_text()) for out in outs]
    scored = [m for m in rows if "err_mean" in m]
    live = [m for m in scored if m["state"] == "LIVE"]
    points = sum(s["seen_points"] for s in scores)
    return dict(
        runs=len(outs),
        in_view=sum(m["in_view"] for m in rows),
        scored=len(scored),
        live=len(live),
        live_over_2mm=sum(m["err_p95"] > 2.0 for m in live),
        over_2mm_any_state=sum(m["err_p95"] > 2.0 for m in scored),
        mean_boundary_error_mm=float(np.mean([m["err_mean"] for m in scored])),
        mean_mri_only_mm=float(np.mean([m["mri_mean"] for m in scored])),
        seen_points=points,
        seen_err_mm=sum(s["seen_err"] * s["seen_points"] for s in scores if s["seen_points"])
        / points,
        seen_mri_err_mm=sum(
            s["seen_mri_err"] * s["seen_points"] for s in scores if s["seen_points"]
        )
        / points,
        seen_beat=sum(s["seen_beat"] * s["seen_points"] for s in scores if s["seen_points"])
        / points,
        runs_seen_worse=sum(s["seen_err"] > s["seen_mri_err"] for s in scores if s["seen_points"]),
        missed=sum(s["missed"] for s in scores),
        missed_checked=sum(s["missed_checked"] for s in scores),
        missed_live=sum(
            1 for m in rows if not m["in_view"] and m["true_area_mm2"] >= 1 and m["state"] == "LIVE"
        ),
    )


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("case", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--options", type=Path)
    p.add_argument("--late-s", type=float, default=12.0)
    p.add_argument("--sweeps", type=int, default=4)
    p.add_argument("--second-after-s", type=float, default=0.3)
    p.add_argument("--run-arg", action="append", default=[], help="more usnav run arguments")
    p.add_argument("--ctrl-c", type=int, default=2, help="Ctrl-Cs that end the run")
    p = sub.add_parser("score")
    p.add_argument("case", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("table")
    p.add_argument("outs", type=Path, nargs="+")
    p = sub.add_parser("pooled")
    p.add_argument("outs", type=Path, nargs="+")
    p = sub.add_parser("details")
    p.add_argument("outs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.cmd == "run":
        RUN_ARGS.extend(args.run_arg)
        CTRL_C_COUNT[0] = args.ctrl_c
        run(args.case, args.out, args.options, args.late_s, args.sweeps, args.second_after_s)
    elif args.cmd == "score":
        print(json.dumps(score(args.case, args.out), indent=1, default=str)[:4000])
    elif args.cmd == "pooled":
        print(json.dumps(pooled(args.outs), indent=1))
    elif args.cmd == "details":
        details(args.outs)
    else:
        table(args.outs)


if __name__ == "__main__":
    main(sys.argv[1:])
