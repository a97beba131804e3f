"""Write a sharp real-photo set (``photo_sources.SOURCES``) from a snapshot of its repository.

``build`` writes ``OUT/<class>/*.jpg`` from a snapshot of the set's repository (a bare git
directory, e.g. one brought by a fetch, or an ordinary checkout or folder) and ``OUT/SET.json``: the
source, the licence, every photo's origin path and a digest of the whole set, so a benchmark can
record exactly what it read. What it does to the photos, the same for every set:

- photos per class are capped deterministically (ordered by a hash of set name and path, not by
  listing order or chance), so the same snapshot always gives the same files;
- a photo whose short side is below the source's ``min_short_px`` is skipped, and so is one that
  does not decode;
- byte-identical photos are kept once; a photo found under two classes is dropped from both;
- photos keep their own resolution; only one whose long side is above ``MAX_SIDE_PX`` is scaled
  down (Lanczos), and one with an EXIF rotation or a non-RGB mode is re-encoded upright RGB
  (JPEG quality ``JPEG_QUALITY``). Everything else is copied byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from pathlib import Path
from typing import Iterator, Protocol

from photo_sources import PhotoSource

MAX_SIDE_PX = 640  # keeps the cache small; the benchmark reads photos at 160 px
JPEG_QUALITY = 95
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MANIFEST = "SET.json"


class Tree(Protocol):
    """Read-only files of one repository revision."""

    def files(self, folder: str) -> list[str]:
        """Paths (relative to the repository root) of every file under ``folder``, sorted."""

    def read(self, path: str) -> bytes:
        """The bytes of one file listed by ``files``."""


class GitTree:
    """A revision of a git repository (bare or not), read with the git command."""

    def __init__(self, git_dir: Path, rev: str) -> None:
        self.git_dir, self.rev = git_dir, rev
        found = self._git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
        if not found:
            head = self._git("rev-parse", "HEAD", check=False) or "none"
            raise SystemExit(f"{git_dir} has no commit {rev} (its HEAD is {head}); pass --rev HEAD to read "
                             "the snapshot you have, and check the photos again")
        self.commit = found
        self._batch: subprocess.Popen | None = None

    def _git(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(["git", "--git-dir", str(self.git_dir), *args], capture_output=True, text=True)
        if proc.returncode != 0:
            if check:
                raise SystemExit(f"git {' '.join(args)} failed in {self.git_dir}: {proc.stderr.strip()}")
            return ""
        return proc.stdout.strip()

    def files(self, folder: str) -> list[str]:
        out = self._git("ls-tree", "-r", "--name-only", "-z", self.commit, "--", folder.rstrip("/") + "/")
        return sorted(p for p in out.split("\0") if p)

    def read(self, path: str) -> bytes:
        if self._batch is None:  # one long-lived `git cat-file --batch` instead of a process per photo
            self._batch = subprocess.Popen(["git", "--git-dir", str(self.git_dir), "cat-file", "--batch"],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        stdin, stdout = self._batch.stdin, self._batch.stdout
        stdin.write(f"{self.commit}:{path}\n".encode())
        stdin.flush()
        header = stdout.readline().decode().split()
        if len(header) != 3 or header[1] != "blob":
            raise SystemExit(f"{path} is missing from the snapshot ({' '.join(header)}); a fetched snapshot leaves "
                             "out files of 4 MiB and more and Git LFS content")
        data = stdout.read(int(header[2]))
        stdout.read(1)  # the newline after each object
        return data

    def close(self) -> None:
        if self._batch is not None:
            self._batch.communicate()
            self._batch = None


class FolderTree:
    """An ordinary folder: a checkout or an unpacked archive of the repository."""

    def __init__(self, root: Path) -> None:
        self.root, self.commit = root, None

    def files(self, folder: str) -> list[str]:
        base = self.root / folder
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def close(self) -> None:
        pass


def open_tree(source: Path, rev: str) -> GitTree | FolderTree:
    """A ``Tree`` for ``source``: a bare git directory, a checkout (its ``.git`` is read at ``rev``), or a folder."""
    if (source / "objects").is_dir() and (source / "HEAD").is_file():
        return GitTree(source, rev)
    if (source / ".git").is_dir():
        return GitTree(source / ".git", rev)
    if source.is_dir():
        return FolderTree(source)
    raise SystemExit(f"{source} is neither a git directory nor a folder")


def _rank(set_name: str, path: str) -> str:
    return hashlib.sha1(f"{set_name}/{path}".encode()).hexdigest()


def _photo(data: bytes, min_short_px: int) -> tuple[bytes | None, str]:
    """(bytes to write, "") or (None, why it is skipped). Re-encodes only when it must (module docstring)."""
    from PIL import Image, ImageOps

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception:  # noqa: BLE001 - any undecodable file is skipped the same way
        return None, "undecodable"
    rotated = img.getexif().get(0x0112, 1) not in (1, None)
    if rotated:
        img = ImageOps.exif_transpose(img)
    long_side = max(img.size)
    scale = min(1.0, MAX_SIDE_PX / long_side)
    if min(img.size) * scale < min_short_px:  # judged after any downscale: what is written must be big enough
        return None, "too small"
    if long_side <= MAX_SIDE_PX and not rotated and img.mode == "RGB" and img.format == "JPEG":
        return data, ""
    img = img.convert("RGB")
    if scale < 1.0:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue(), ""


def _candidates(tree: Tree, source: PhotoSource) -> Iterator[tuple[str, str]]:
    for cls, folders in source.classes.items():
        for folder in folders:
            paths = [p for p in tree.files(folder) if p.lower().endswith(IMAGE_SUFFIXES)]
            if not paths:
                raise SystemExit(f"{folder} has no photos in this snapshot (is it {source.repo}?)")
            for p in paths:
                yield cls, p


def build(source: PhotoSource, snapshot: Path, out: Path, *, rev: str | None = None,
          keep: set[str] | None = None) -> dict:
    """Write ``source``'s photos from ``snapshot`` to ``OUT/<class>/`` and ``OUT/SET.json``; returns the manifest.

    ``rev`` defaults to the source's pinned commit (a plain folder has none). ``keep``, when given,
    is the set of file names allowed (e.g. those a licence file lists); others are skipped.
    Raises SystemExit when OUT already holds photos, or the snapshot lacks a folder or the commit.
    """
    if out.exists() and any(p.is_dir() for p in out.iterdir()):
        raise SystemExit(f"{out} already holds class folders; remove it or choose another folder")
    tree = open_tree(snapshot, rev or source.commit)
    try:
        by_class: dict[str, list[str]] = {c: [] for c in source.classes}
        for cls, path in _candidates(tree, source):
            by_class[cls].append(path)
        skipped: dict[str, int] = {}
        chosen: dict[str, list[tuple[str, bytes, str]]] = {}
        owner: dict[str, set[str]] = {}  # sha1 of the source bytes -> classes that have it
        for cls, paths in by_class.items():
            picked = []
            for path in sorted(paths, key=lambda p: _rank(source.name, p)):
                if len(picked) >= source.per_class:
                    break
                if keep is not None and Path(path).name not in keep:
                    skipped["not in the licence list"] = skipped.get("not in the licence list", 0) + 1
                    continue
                raw = tree.read(path)
                digest = hashlib.sha1(raw).hexdigest()
                if cls in owner.get(digest, set()):
                    skipped["duplicate"] = skipped.get("duplicate", 0) + 1
                    continue
                data, why = _photo(raw, source.min_short_px)
                if data is None:
                    skipped[why] = skipped.get(why, 0) + 1
                    continue
                owner.setdefault(digest, set()).add(cls)
                picked.append((path, data, digest))
            chosen[cls] = picked
        two_classes = {d for d, classes in owner.items() if len(classes) > 1}
        files: dict[str, dict] = {}
        for cls, picked in chosen.items():
            (out / cls).mkdir(parents=True, exist_ok=True)
            for path, data, digest in picked:
                if digest in two_classes:
                    skipped["in two classes"] = skipped.get("in two classes", 0) + 1
                    continue
                name = _unique_name(out / cls, path)
                (out / cls / name).write_bytes(data)
                files[f"{cls}/{name}"] = {"from": path, "sha1": hashlib.sha1(data).hexdigest()}
        manifest = {
            "set": source.name, "kind": source.kind, "repo": source.repo, "commit": tree.commit,
            "licence": source.licence, "caveats": source.caveats,
            "classes": {c: sum(1 for k in files if k.startswith(c + "/")) for c in source.classes},
            "skipped": skipped, "max_side_px": MAX_SIDE_PX, "min_short_px": source.min_short_px,
            "digest": set_digest(files), "files": files,
        }
    finally:
        tree.close()
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _unique_name(folder: Path, path: str) -> str:
    p = Path(path)
    name = p.stem + ".jpg"
    if (folder / name).exists():  # the same file name in two source folders of one class
        name = f"{p.parent.name}_{p.stem}.jpg"
    return name


def set_digest(files: dict[str, dict]) -> str:
    """One hash for a whole set: every ``class/name`` with its bytes' sha1, in sorted order."""
    lines = "".join(f"{k}:{v['sha1']}\n" for k, v in sorted(files.items()))
    return hashlib.sha1(lines.encode()).hexdigest()


def licence_list(path: Path, licence: str = "CC-BY") -> dict[str, str]:
    """File name -> its line, for every line of a per-photo licence list (TensorFlow's flower_photos
    LICENSE.txt: ``daisy/7568630428_8cf0fc16ff_n.jpg CC-BY by NAME - URL``) that grants ``licence``."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) >= 2 and parts[1] == licence and "/" in parts[0]:
            out[parts[0].rsplit("/", 1)[1]] = line
    if not out:
        raise SystemExit(f"{path} lists no {licence} photo; is it flower_photos' LICENSE.txt?")
    return out


def read_manifest(photos: Path) -> dict | None:
    """The SET.json that ``build`` wrote in ``photos``, or None for any other folder of photos."""
    path = photos / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def verify(photos: Path) -> dict:
    """The SET.json of a built set, after checking that its class folders hold exactly the photos it lists,
    byte for byte; SystemExit naming the first difference otherwise (a set edited by hand is not the set)."""
    manifest = read_manifest(photos)
    if manifest is None:
        raise SystemExit(f"{photos} has no {MANIFEST}; it was not built by tools/photo_sets.py")
    listed = manifest["files"]
    found = {f.relative_to(photos).as_posix() for d in photos.iterdir() if d.is_dir() and not d.name.startswith(".")
             for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES}
    if found != set(listed):
        extra, missing = sorted(found - set(listed)), sorted(set(listed) - found)
        raise SystemExit(f"{photos} differs from its {MANIFEST}: {len(extra)} photos not listed (e.g. {extra[:1]}), "
                         f"{len(missing)} missing (e.g. {missing[:1]}); rebuild it")
    for name, entry in sorted(listed.items()):
        if hashlib.sha1((photos / name).read_bytes()).hexdigest() != entry["sha1"]:
            raise SystemExit(f"{photos / name} is not the photo {MANIFEST} lists; rebuild the set")
    return manifest
