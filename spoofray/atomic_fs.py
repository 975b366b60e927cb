"""A local pyarrow filesystem whose written files appear whole or not at all.

Ray Tune keeps its experiment state (trial list, search-algorithm state) in a staging
folder and copies it into ``storage_path`` after every snapshot with plain writes. A sweep
killed during that copy leaves a truncated state file behind, and ``Tuner.restore`` then
logs "Failed to restore the run state" and silently starts a different sweep. Passing
:func:`atomic_local_filesystem` as Tune's ``storage_filesystem`` makes every such write go
to a hidden temporary sibling that is renamed into place on close. S3 needs none of this:
an object PUT is already all-or-nothing.
"""

from __future__ import annotations

import io
import os
import shutil
import uuid
from typing import Any

import pyarrow.fs


class _RenameOnClose(io.FileIO):
    """A file written under a temporary name and renamed to ``final_path`` on close."""

    def __init__(self, final_path: str) -> None:
        head, tail = os.path.split(final_path)
        # Leading dot and no ".json"/".pkl" ending: Tune's globs never pick up a leftover.
        self._temp_path = os.path.join(head, f".{tail}.partial-{uuid.uuid4().hex[:8]}")
        self._final_path = final_path
        super().__init__(self._temp_path, "wb")

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        os.replace(self._temp_path, self._final_path)

    def discard(self) -> None:
        """Close without publishing: the writer failed part-way."""
        if not self.closed:
            io.FileIO.close(self)
            os.remove(self._temp_path)

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None:
            self.discard()
        self.close()

    def __del__(self) -> None:
        self.discard()  # dropped without close(), as pyarrow does after a failed write


class AtomicLocalHandler(pyarrow.fs.FileSystemHandler):
    """The local filesystem, except that ``open_output_stream`` publishes on close."""

    def __init__(self) -> None:
        self._local = pyarrow.fs.LocalFileSystem()

    def __reduce__(self) -> tuple[Any, ...]:  # shipped to Tune's trial actors
        return (AtomicLocalHandler, ())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AtomicLocalHandler)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def get_type_name(self) -> str:
        return "local-atomic"

    def normalize_path(self, path: str) -> str:
        return self._local.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pyarrow.fs.FileInfo]:
        return self._local.get_file_info(paths)

    def get_file_info_selector(self, selector: pyarrow.fs.FileSelector) -> list:
        return self._local.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self._local.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._local.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("refusing to delete the contents of the root directory")

    def delete_file(self, path: str) -> None:
        self._local.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._local.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        with self._local.open_input_stream(src) as source, _RenameOnClose(dest) as target:
            shutil.copyfileobj(source, target, 1 << 20)

    def open_input_stream(self, path: str) -> pyarrow.NativeFile:
        return self._local.open_input_stream(path)

    def open_input_file(self, path: str) -> pyarrow.NativeFile:
        return self._local.open_input_file(path)

    def open_output_stream(self, path: str, metadata: Any) -> pyarrow.NativeFile:
        return pyarrow.PythonFile(_RenameOnClose(path), mode="w")

    def open_append_stream(self, path: str, metadata: Any) -> pyarrow.NativeFile:
        return self._local.open_append_stream(path)


def atomic_local_filesystem() -> pyarrow.fs.PyFileSystem:
    """The local filesystem for Tune's ``storage_filesystem`` (see the module docstring)."""
    return pyarrow.fs.PyFileSystem(AtomicLocalHandler())
