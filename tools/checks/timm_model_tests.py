"""Runs timm's own model test suite (tests/test_models.py) on revzoo's ViTs registered in timm.

Usage:
    python tools/checks/timm_model_tests.py [--sdist timm-X.tar.gz] [--unpatched] [-- PYTEST ARGS...]

timm's test file is not part of revzoo: it comes from the sdist of the installed timm version
(`pip download timm==VERSION --no-deps --no-binary :all:`, run here when --sdist is not given).
It is copied into a temporary folder with a conftest.py importing `revzoo_vit.timm_models`, so
that vit-tiny, vit-small, vit-base and their -rev forms are in timm's registry when pytest
collects, and run on those names, TorchScript tests left out (RevViT is not scriptable).

timm picks tests per model by name and module: its ViTs are in NON_STD_FILTERS (`vit_*`: no NCHW
`forward_features`, so not the CNN config test) and in FEAT_INTER_FILTERS (module
`vision_transformer`: the forward_intermediates tests). revzoo's names (`vit-*`) and module
(`timm_models`) are added to those two lists, so revzoo's ViTs get the tests timm's ViTs get;
--unpatched runs the file as timm ships it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import timm

NAMES = "(vit-tiny or vit-small or vit-base) and not torchscript"
# (anchor in timm's test_models.py, the line added after it)
CLASSIFY = (
    ("    'gemma4_vit*', 'qwen3_vit*', 'efficientvim*', 'deepseek_vit*',\n", "    'vit-*',  # revzoo's ViTs\n"),
    ("    'pnasnet', 'selecsls', 'senet', 'sequencer', 'vgg', 'visformer', 'xception', 'xception_aligned',\n",
     "    'timm_models',  # revzoo's ViTs' module\n"),
)
CONFTEST = "import revzoo_vit.timm_models  # noqa: F401  (registers revzoo's ViTs in timm before collection)\n"
MARKERS = ("base", "forward", "backward", "cfg", "cfg_nonstd", "torchscript", "features", "fxforward", "fxbackward",
           "timeout")


def sdist_of_installed_timm(folder: Path) -> Path:
    version = timm.__version__
    subprocess.run([sys.executable, "-m", "pip", "download", f"timm=={version}", "--no-deps", "--no-binary", ":all:",
                    "-d", str(folder)], check=True)
    return folder / f"timm-{version}.tar.gz"


def patched_test_file(sdist: Path, unpatched: bool) -> str:
    with tarfile.open(sdist) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("/tests/test_models.py"))
        source = archive.extractfile(member).read().decode()
    if unpatched:
        return source
    for anchor, line in CLASSIFY:
        if source.count(anchor) != 1:
            sys.exit(f"timm {timm.__version__}'s test_models.py changed: {anchor.strip()!r} is not found once")
        source = source.replace(anchor, anchor + line)
    return source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, help="timm's sdist (default: pip download of the installed version)")
    parser.add_argument("--unpatched", action="store_true", help="run timm's file as shipped (no added names)")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        sdist = args.sdist or sdist_of_installed_timm(folder)
        (folder / "test_models.py").write_text(patched_test_file(sdist, args.unpatched))
        (folder / "conftest.py").write_text(CONFTEST)
        (folder / "pytest.ini").write_text("[pytest]\nmarkers =\n" + "".join(f"    {m}\n" for m in MARKERS))
        command = [sys.executable, "-m", "pytest", "test_models.py", "-k", NAMES, "-p", "no:cacheprovider",
                   "-q", *args.pytest_args]
        sys.exit(subprocess.run(command, cwd=folder).returncode)


if __name__ == "__main__":
    main()
