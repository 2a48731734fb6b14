"""What a save leaves on disk besides the file (customml._safetensors.atomic_write): the
temporary of a save killed with kill -9 is removed by the next save to the same path, and
only that (not a live writer's, not another path's, not a name we did not make); and a
save into a missing directory names the path the user gave, never the temporary."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import customml as cm

OLD = time.time() - 3600  # well past _STALE_TMP_SECONDS


def _model():
    return cm.Sequential([cm.layers.Dense(4)], input_dim=3, seed=0)


def _temporaries(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_killed_save_leaves_a_temporary_the_next_save_removes(tmp_path):
    # A child process holds a save open (its data never ends) and is killed with -9: the
    # first save meanwhile leaves its temporary alone (a live writer holds it), the one
    # after the kill removes it.
    path = tmp_path / "m.cml"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import time
                from customml._safetensors import atomic_write
                def chunks():
                    yield b"x" * 1000
                    time.sleep(600)
                atomic_write({str(path)!r}, chunks())
                """
            ),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        deadline = time.time() + 60
        while not _temporaries(tmp_path):
            assert time.time() < deadline and child.poll() is None, "the child never started its save"
            time.sleep(0.05)
        (leftover,) = _temporaries(tmp_path)
        os.utime(tmp_path / leftover, (OLD, OLD))
        _model().save(path)
        assert _temporaries(tmp_path) == [leftover], "a live writer's temporary was removed"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert _temporaries(tmp_path) == [leftover]
    _model().save(path)
    assert _temporaries(tmp_path) == []
    np.testing.assert_array_equal(cm.load(path).get_weights()[0], _model().get_weights()[0])


def test_only_stale_temporaries_of_our_naming_for_that_path_are_removed(tmp_path):
    ours = ".m.cml.0123456789ab.tmp"
    kept = [
        ".m.cml.0123456789AB.tmp",  # upper case: not secrets.token_hex's
        ".m.cml.0123456789a.tmp",  # 11 digits
        ".other.cml.0123456789ab.tmp",  # another path's
        "m.cml.0123456789ab.tmp",  # not hidden
    ]
    for name in [ours, *kept]:
        (tmp_path / name).write_bytes(b"partial")
        os.utime(tmp_path / name, (OLD, OLD))
    fresh = ".m.cml.ba9876543210.tmp"  # just created: maybe a writer between open and flock
    (tmp_path / fresh).write_bytes(b"partial")
    _model().save(tmp_path / "m.cml")
    assert _temporaries(tmp_path) == sorted([*kept, fresh])


def test_save_into_a_missing_directory_names_the_path_given(tmp_path):
    target = tmp_path / "no" / "such" / "m.cml"
    with pytest.raises(FileNotFoundError) as info:
        _model().save(target)
    message = str(info.value)
    assert str(target) in message and str(target.parent) in message and ".tmp" not in message


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root writes anywhere")
def test_save_into_a_read_only_directory_names_the_path_given(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(PermissionError) as info:
            _model().save(tmp_path / "m.cml")
    finally:
        tmp_path.chmod(0o700)
    assert str(tmp_path / "m.cml") in str(info.value) and ".tmp" not in str(info.value)
