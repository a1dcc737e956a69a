"""No installed dependency is a release named by a published advisory; pyproject's floors exclude them.

The table is docs/dependencies.md's, as data: a test keeps the two in step (every advisory id
appears there). Advisories that cannot be fixed by a floor are listed with the reason they are
accepted (also in docs/dependencies.md), and are not enforced.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Advisory:
    """A published advisory: the distribution, its ids, the affected releases and what it is."""

    package: str
    ids: tuple[str, ...]
    affected: tuple[str, ...]  # one specifier set per affected range, e.g. (">=5,<5.29.5", "<4.25.8")
    what: str

    def affects(self, version: str) -> bool:
        parsed = Version(version)
        return any(parsed in SpecifierSet(spec, prereleases=True) for spec in self.affected)


ADVISORIES = (
    Advisory("lightning", ("GHSA-w37p-236h-pfx3",), ("==2.6.2", "==2.6.3"),
             "compromised uploads: a credential stealer runs on `import lightning`"),
    Advisory("lightning", ("GHSA-qqmf-gpg7-g8gw", "CVE-2026-58659"), ("<2.6.6",),
             "a checkpoint's hyper-parameters (_instantiator) execute code when loaded"),
    Advisory("pytorch-lightning", ("GHSA-qqmf-gpg7-g8gw", "PYSEC-2026-3967"), ("<2.6.6",),
             "the same, in the pytorch-lightning distribution"),
    Advisory("torch", ("GHSA-53q9-r3pm-6pq6", "CVE-2025-32434"), ("<2.6.0",),
             "torch.load(weights_only=True) can still execute code"),
    Advisory("torch", ("CVE-2026-24747",), ("<2.10.0",),
             "weights_only unpickler memory corruption from a crafted checkpoint"),
    Advisory("torch", ("PYSEC-2026-139", "CVE-2026-4538"), ("<=2.10.0",),
             "deserialisation in the pt2 loading handler"),
    Advisory("tqdm", ("GHSA-g7vv-2v7x-gj9p", "CVE-2024-34062"), (">=4.4.0,<4.66.3",),
             "CLI arguments passed through eval"),
    Advisory("pydantic", ("GHSA-mr82-8j83-vxmv", "CVE-2024-3772"), (">=2.0,<2.4.0", "<1.10.13"),
             "regular-expression denial of service in email validation"),
    Advisory("pyyaml", ("CVE-2020-14343", "CVE-2020-1747"), ("<5.4",),
             "code execution through full_load / FullLoader"),
    Advisory("numpy", ("GHSA-6p56-wp2h-9hxr", "CVE-2021-33430"), (">=1.9.0,<1.21",),
             "buffer overflow with arrays of more than 32 dimensions"),
    Advisory("scipy", ("CVE-2023-25399",), ("<1.11.0",),
             "reference-count leak in ndimage find_objects (disputed)"),
    Advisory("pillow", ("PYSEC-2025-61", "GHSA-xg8h-j46f-w952"), ("<11.3.0",),
             "buffer overflow writing DDS images"),
    Advisory("opencv-python-headless", ("GHSA-jh2j-j4j9-crg3", "CVE-2023-4863"), ("<4.8.1.78",),
             "bundled libwebp heap overflow"),
    Advisory("protobuf", ("GHSA-8qvm-5x2c-j2w7", "CVE-2025-4565"), ("<4.25.8", ">=5,<5.29.5", ">=6,<6.31.1"),
             "unbounded recursion in the pure-Python parser"),
    Advisory("protobuf", ("GHSA-7gcm-g887-7qv7", "CVE-2026-0994"), ("<5.29.6", ">=6,<6.33.5"),
             "json_format.ParseDict recursion limit bypass"),
    Advisory("pytest", ("GHSA-6w46-j5rx-g56g", "CVE-2025-71176"), ("<9.0.3",),
             "predictable /tmp/pytest-of-<user> directories"),
    Advisory("onnx", ("CVE-2026-28500", "CVE-2026-34445", "CVE-2026-27489"), ("<1.21.0",),
             "hub trust bypass, ExternalDataInfo attribute injection, external-data symlink traversal"),
    Advisory("onnx", ("CVE-2024-27318", "CVE-2024-27319"), ("<1.16.0",),
             "external-data path traversal, out-of-bounds read"),
    Advisory("distributed", ("GHSA-hwqr-f3v9-hwxr", "CVE-2021-42343"), ("<2021.10.0",),
             "LocalCluster workers listen on every interface (remote code execution)"),
    Advisory("dask", ("GHSA-xqgj-r6xv-9cw4", "CVE-2024-10096"), ("<=2024.8.2",),
             "code execution through pickled tasks sent to a scheduler (rejected by the CNA: by design)"),
    Advisory("tornado", ("GHSA-pr2v-jx2c-wg9f", "CVE-2025-67724", "GHSA-c98p-7wgm-6p64", "CVE-2025-67725",
                         "GHSA-jhmp-mqwm-3gq8", "CVE-2025-67726"), ("<6.5.3",),
             "header injection and XSS, quadratic-time header parsing (denial of service)"),
    Advisory("tornado", ("GHSA-qjxf-f2mg-c6mc", "GHSA-78cv-mqj4-43f7"), ("<6.5.5",),
             "denial of service through many multipart parts, incomplete cookie-attribute validation"),
    Advisory("jinja2", ("GHSA-cpwx-vrp4-4pq7", "CVE-2025-27516"), ("<3.1.6",),
             "sandbox breakout through the attr filter"),
    Advisory("jinja2", ("GHSA-q2x7-8rv6-6q7h", "GHSA-gmj6-6f8f-6699"), ("<3.1.5",),
             "sandbox breakouts through an indirect format reference and malicious file names"),
    Advisory("aiohttp", ("GHSA-9548-qrrj-x5pj", "CVE-2025-53643"), ("<3.12.14",),
             "request smuggling in the pure-Python parser"),
    Advisory("aiohttp", ("GHSA-cq5v-8q36-5273",), ("<3.14.3",),
             "out-of-bounds heap read in the C response parser"),
    Advisory("aiohttp", ("GHSA-mfx4-hv73-q22v", "GHSA-mq44-7p77-q5h7"), ("<3.14.2",),
             "request smuggling via WebSocket upgrade, compressed frames accepted without negotiation"),
)

#: Known, not fixable by a floor here, and why (docs/dependencies.md says the same).
ACCEPTED = (
    Advisory("pillow", ("CVE-2026-25990", "CVE-2026-40192", "PYSEC-2026-2253", "CVE-2026-55379"), ("<12.3.0",),
             "centrosome 1.3.4 (the latest release) requires pillow<12; vstain decodes with Pillow only the "
             "PNG that matplotlib has just rendered for it (synth previews), never an untrusted image"),
    Advisory("torch", ("GHSA-rrmf-rvhw-rf47",), ("<=2.13.0",),
             "torch.jit.script memory corruption; fixed upstream after the torch used here, and vstain never "
             "scripts code (it exports through torch.onnx)"),
)


def vulnerable(installed: dict[str, str], advisories=ADVISORIES) -> list[str]:
    """``package version: ids (what)`` for each installed release an advisory names."""
    found = []
    for advisory in advisories:
        version = installed.get(canonicalize_name(advisory.package))
        if version is not None and advisory.affects(version):
            found.append(f"{advisory.package} {version}: {', '.join(advisory.ids)} ({advisory.what})")
    return found


def installed_versions() -> dict[str, str]:
    return {canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}


def test_no_installed_release_is_named_by_an_advisory():
    assert vulnerable(installed_versions()) == []


def test_the_check_flags_the_compromised_and_vulnerable_releases():
    assert len(vulnerable({"lightning": "2.6.3"})) == 2  # compromised and before 2.6.6
    assert len(vulnerable({"lightning": "2.6.5"})) == 1
    assert vulnerable({"lightning": "2.6.6", "pytorch-lightning": "2.6.6", "tqdm": "4.66.3", "torch": "2.11.0"}) == []
    assert vulnerable({"torch": "2.10.0"}) == ["torch 2.10.0: PYSEC-2026-139, CVE-2026-4538 (deserialisation in the "
                                               "pt2 loading handler)"]
    assert len(vulnerable({"protobuf": "5.29.5"})) == 1 and vulnerable({"protobuf": "6.33.5"}) == []


def _requirements() -> list[Requirement]:
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    return [Requirement(line) for line in lines]


def _floor(requirement: Requirement) -> Version | None:
    floors = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
    return max(floors) if floors else None


def test_pyproject_floors_exclude_every_advisory():
    declared = {canonicalize_name(r.name): r for r in _requirements()}
    assert "lightning" in declared and _floor(declared["lightning"]) >= Version("2.6.6")
    problems = []
    for advisory in ADVISORIES:
        requirement = declared.get(canonicalize_name(advisory.package))
        if requirement is None:
            continue  # a dependency of a dependency: only the installed-release check applies
        floor = _floor(requirement)
        if floor is None:
            problems.append(f"{requirement}: no lower bound")
            continue
        bounds = [Version(s.version) for spec in advisory.affected for s in SpecifierSet(spec)
                  if s.operator in ("<", "<=", "==")]
        # every affected release lies below the floor: no release the floor allows is affected
        if advisory.affects(str(floor)) or any(bound > floor for bound in bounds):
            problems.append(f"{requirement} allows {advisory.package} {', '.join(advisory.affected)} "
                            f"({', '.join(advisory.ids)})")
    assert problems == []


def test_torch_floor_is_satisfied_by_the_pinned_torch():
    # The Makefile installs torch==$(TORCH_VERSION) first; pip must never resolve another torch.
    pinned = re.search(r"^TORCH_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1)
    torch_requirement = next(r for r in _requirements() if canonicalize_name(r.name) == "torch")
    assert torch_requirement.specifier.contains(pinned)


def test_docs_list_every_advisory():
    text = (ROOT / "docs" / "dependencies.md").read_text(encoding="utf-8")
    missing = [i for advisory in ADVISORIES + ACCEPTED for i in advisory.ids if i not in text]
    assert missing == []
