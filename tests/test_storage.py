"""storage: listing, clean-up and the one publish protocol, on local folders and moto S3."""

from __future__ import annotations

import os

import pytest

from spoofray import storage


def _s3fs():
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]})
    fs.invalidate_cache()
    return fs


def _fill(tmp: str, marker: str | None = "_DONE") -> None:
    storage.write_bytes_atomic(storage.join(tmp, "a.txt"), b"a")
    storage.write_bytes_atomic(storage.join(tmp, "sub", "b.txt"), b"bb")
    if marker:
        storage.write_bytes_atomic(storage.join(tmp, marker), b"{}")


def _tree(root: str) -> dict[str, bytes]:
    """Relative name -> bytes of every file under ``root``."""
    return {uri[len(root) + 1:]: storage.read_bytes(uri) for uri in storage.list_files(root)}


WANT = {"a.txt": b"a", "sub/b.txt": b"bb", "_DONE": b"{}"}


def test_publish_dir_locally_is_one_rename_with_the_marker_inside(tmp_path):
    tmp, final = str(tmp_path / "_tmp_x"), str(tmp_path / "out" / "x")
    _fill(tmp)
    storage.publish_dir(tmp, final, "_DONE")
    assert _tree(final) == WANT
    assert not os.path.exists(tmp)


def test_publish_dir_without_its_marker_publishes_nothing(tmp_path):
    tmp, final = str(tmp_path / "_tmp_x"), str(tmp_path / "x")
    _fill(tmp, marker=None)
    with pytest.raises(FileNotFoundError, match="_DONE is missing.*nothing was published"):
        storage.publish_dir(tmp, final, "_DONE")
    assert not os.path.exists(final)
    assert sorted(_tree(tmp)) == ["a.txt", "sub/b.txt"]


def test_publish_dir_locally_that_fails_leaves_the_target_as_it_was(tmp_path):
    tmp, final = str(tmp_path / "_tmp_x"), str(tmp_path / "x")
    _fill(tmp)
    storage.write_bytes_atomic(storage.join(final, "old.txt"), b"old")
    with pytest.raises(OSError):  # a rename never lands on a non-empty folder
        storage.publish_dir(tmp, final, "_DONE")
    assert _tree(final) == {"old.txt": b"old"}
    assert _tree(tmp) == WANT  # for the caller to discard


def test_publish_dir_on_s3_copies_everything_and_the_marker_last(s3_bucket):
    tmp, final = f"{s3_bucket}/_tmp_x", f"{s3_bucket}/out/x"
    _fill(tmp)
    storage.publish_dir(tmp, final, "_DONE")
    assert _tree(final) == WANT
    fs = _s3fs()
    assert not fs.exists(tmp[len("s3://"):])
    # The marker is the newest object: it was written after every other one.
    info = {k: fs.info(k)["LastModified"] for k in fs.find(final[len("s3://"):])}
    marker = f"{final[len('s3://'):]}/_DONE"
    assert info[marker] == max(info.values())


def test_publish_dir_on_s3_that_fails_midway_publishes_nothing(s3_bucket):
    """A copy that fails for good (an archived object S3 refuses to copy) after others went
    through: what was copied is removed, no marker appears, the temporary folder stays."""
    tmp, final = f"{s3_bucket}/_tmp_x", f"{s3_bucket}/x"
    storage.write_bytes_atomic(f"{tmp}/a.txt", b"a")
    fs = _s3fs()
    fs.pipe(f"{tmp[len('s3://'):]}/b.txt", b"b", StorageClass="GLACIER")
    storage.write_bytes_atomic(f"{tmp}/c.txt", b"c")
    storage.write_bytes_atomic(f"{tmp}/_DONE", b"{}")
    with pytest.raises(Exception) as err:
        storage.publish_dir(tmp, final, "_DONE")
    assert not isinstance(err.value, storage.StorageUnavailableError)
    assert storage.list_files(final) == {}
    assert not storage.exists(f"{final}/_DONE")
    assert sorted(storage.list_files(tmp)) == [f"{tmp}/{n}" for n in
                                               ("_DONE", "a.txt", "b.txt", "c.txt")]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_listing_and_removing_what_no_one_refers_to(where, tmp_path, request):
    root = str(tmp_path) if where == "local" else request.getfixturevalue("s3_bucket")
    for name in ("part-1.parquet", "part-2.parquet", "notes.txt"):
        storage.write_bytes_atomic(storage.join(root, "d", name), b"x")
    storage.write_bytes_atomic(storage.join(root, "d", "sub", "part-3.parquet"), b"yy")
    d = storage.join(root, "d")
    assert storage.list_dir(d, suffix=".parquet") == [storage.join(d, "part-1.parquet"),
                                                     storage.join(d, "part-2.parquet")]
    assert storage.list_dir(d, prefix="su") == [storage.join(d, "sub")]
    files = storage.list_files(d, suffix=".parquet")
    assert sorted(files) == [storage.join(d, n) for n in
                             ("part-1.parquet", "part-2.parquet", "sub/part-3.parquet")]
    assert files[storage.join(d, "sub/part-3.parquet")]["size"] == 2
    assert storage.list_dir(storage.join(root, "nothing")) == []
    assert storage.list_files(storage.join(root, "nothing")) == {}
    assert storage.is_file(storage.join(d, "notes.txt")) and not storage.is_file(d)

    assert storage.remove_unlisted(d, {"part-1.parquet", "sub"}) == 2
    assert storage.list_dir(d) == [storage.join(d, "part-1.parquet"), storage.join(d, "sub")]
    assert storage.remove_unlisted(storage.join(root, "nothing"), set()) == 0


def test_temporary_sibling_shares_the_parent_and_hides_behind_an_underscore(tmp_path):
    sib = storage.temporary_sibling(str(tmp_path / "ds"))
    assert os.path.dirname(sib) == str(tmp_path)
    assert os.path.basename(sib).startswith("_tmp_ds-")
    assert sib != storage.temporary_sibling(str(tmp_path / "ds"))
    assert storage.temporary_sibling("s3://b/x/ds/").startswith("s3://b/x/_tmp_ds-")
    assert storage.temporary_sibling("s3://b").startswith("s3://b/_tmp_-")
