"""write_if_changed leaves a file with the same content untouched (components watch their files), and
replaces a changed one atomically with the requested mode."""

from __future__ import annotations

import os
import time
from pathlib import Path

from mlplatform.local.files import PRIVATE, write_if_changed


def test_unchanged_content_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "kube-proxy.yaml"
    assert write_if_changed(path, "mode: iptables\n") is True
    before = path.stat()
    time.sleep(0.01)
    assert write_if_changed(path, "mode: iptables\n") is False
    assert write_if_changed(path, b"mode: iptables\n") is False
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_changed_content_is_replaced_atomically_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    write_if_changed(path, "a: 1\n")
    first_inode = path.stat().st_ino
    assert write_if_changed(path, "a: 2\n", PRIVATE) is True
    assert path.read_text() == "a: 2\n"
    assert path.stat().st_mode & 0o777 == PRIVATE
    assert path.stat().st_ino != first_inode  # a new file renamed into place, never written in place
    assert sorted(os.listdir(tmp_path)) == ["secret.yaml"]  # no staging file left behind


def test_a_private_file_is_never_readable_by_others_even_for_a_moment(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        path = tmp_path / "key"
        write_if_changed(path, b"-----BEGIN PRIVATE KEY-----\n", PRIVATE)
    finally:
        os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o600
