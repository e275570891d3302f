"""Dataset manifests: round trip, relative paths, and refusals naming the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from usnav.errors import InputError
from usnav.io.manifest import ManifestCase, read_manifest, write_manifest


def _case(root: Path, name: str, **tags: str) -> ManifestCase:
    d = root / name
    return ManifestCase(
        case=name,
        recording=d / "sweep.igs.mha",
        mri=d / "mri.nii.gz",
        calibration=d / "calibration.toml",
        init=d / "init_ReferenceToMri.txt",
        label=d / "tumor_label.nii.gz",
        truth=None,
        tags=dict(tags),
    )


def test_round_trip_keeps_paths_and_tags(tmp_path: Path) -> None:
    cases = [_case(tmp_path, "s1", family="trailing", seed="1"), _case(tmp_path, "s2", cohort="x")]
    manifest = write_manifest(tmp_path / "manifest.csv", cases)
    text = manifest.read_text(encoding="utf-8")
    assert "s1/sweep.igs.mha" in text  # written relative to the manifest's folder
    assert str(tmp_path) not in text
    back = read_manifest(manifest)
    assert [c.case for c in back] == ["s1", "s2"]
    assert back[0].recording == (tmp_path / "s1" / "sweep.igs.mha")
    assert back[0].truth is None
    assert back[0].family == "trailing" and back[0].tags["seed"] == "1"
    assert back[1].tags == {"cohort": "x"}


def test_the_removed_tissue_column_is_a_path(tmp_path: Path) -> None:
    """``removed`` (usnav register --removed) is read as a path relative to the manifest,
    not as a free tag, and an empty one is None."""
    (tmp_path / "manifest.csv").write_text(
        "case,recording,mri,calibration,init,removed\n"
        "a,a/s.mha,a/m.nii,a/c.toml,a/i.txt,a/removed_label.nii.gz\n"
        "b,b/s.mha,b/m.nii,b/c.toml,b/i.txt,\n",
        encoding="utf-8",
    )
    a, b = read_manifest(tmp_path / "manifest.csv")
    assert a.removed == tmp_path / "a" / "removed_label.nii.gz"
    assert "removed" not in a.tags
    assert b.removed is None
    back = read_manifest(write_manifest(tmp_path / "again.csv", [a, b]))
    assert back[0].removed == a.removed


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("case,recording,mri,calibration\n", "missing column(s) init"),
        ("case,recording,mri,calibration,init\n,a,b,c,d\n", "line 2"),
        ("case,recording,mri,calibration,init\nx,a,b,c,\n", "empty 'init'"),
        ("case,recording,mri,calibration,init\nx,a,b,c,d\nx,a,b,c,d\n", "appears twice"),
        ("case,recording,mri,calibration,init\n../x,a,b,c,d\n", "not a plain name"),
        # blank lines are skipped, not counted out of the line numbers: z is on line 5
        ("case,recording,mri,calibration,init\nx,a,b,c,d\n\n\nz,a,,c,d\n", "line 5: empty 'mri'"),
        (
            "case,recording,mri,calibration,init\nx,a,b,c,d\n\ny,a,b,c,d\nx,a,b,c,d\n",
            "line 5: case",
        ),
        # a quoted line break was dropped from the name ('x\ny' ran as 'xy')
        ('case,recording,mri,calibration,init\n"x\ny",a,b,c,d\n', "not a plain name"),
    ],
)
def test_bad_manifest_names_the_problem(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "m.csv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(InputError, match=None) as info:
        read_manifest(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such manifest"):
        read_manifest(tmp_path / "nope.csv")
