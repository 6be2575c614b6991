"""The Argo CD health checks in deploy/argocd, run the way Argo CD runs a check from argocd-cm.

Argo CD (util/lua) runs a custom health.lua in gopher-lua, a Lua 5.1, opening only the base, package and
table libraries and a safe `os` (time and date): no `string`, `math`, `io`, `debug` or `coroutine`, and
strings have no methods. The resource is the global `obj` (decoded from JSON) and the script returns a
table whose `status` must be a known health status. Here each script runs under lupa's Lua 5.1 in an
environment with a subset of that (the base functions a check has any use for, `table`, `os.time` and
`os.date`), against every case of its health_test.yaml (Argo CD's own test format: the expected status
and message, compared exactly).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51  # type: ignore[import-untyped]

from hack.gen_argocd_cm import ARGOCD_CM, CUSTOMIZATIONS_DIR, render_argocd_cm
from hack.gen_crds import KINDS, Kind
from lbpair.model import GROUP

# What Argo CD accepts from a script; anything else becomes Unknown.
HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
# A runaway script fails the test instead of hanging it (Argo CD gives a script one second).
INSTRUCTION_LIMIT = 1_000_000

# Builds the sandbox, then runs the chunk in it. The base functions listed are Lua 5.1's and all exist in
# gopher-lua's base library too; `string`'s metatable is removed so `s:upper()` fails as it does in Argo CD.
SANDBOX = """
function(source, chunk_name, obj)
  local env = {}
  for _, name in ipairs({
    "assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall", "print", "rawequal",
    "rawget", "rawset", "select", "setmetatable", "tonumber", "tostring", "type", "unpack", "xpcall",
    "_VERSION",
  }) do
    env[name] = _G[name]
  end
  env._G = env
  env.table = {}
  for name, value in pairs(table) do
    env.table[name] = value
  end
  env.os = {time = os.time, date = os.date}
  env.obj = obj
  local chunk, problem = loadstring(source, "=" .. chunk_name)
  if chunk == nil then
    error(problem, 0)
  end
  setfenv(chunk, env)
  debug.setmetatable("", nil)
  debug.sethook(function() error("instruction limit exceeded", 0) end, "", INSTRUCTION_LIMIT)
  return chunk()
end
"""


@dataclass(frozen=True)
class HealthCase:
    script: Path
    input_path: Path
    status: str
    message: str

    @property
    def name(self) -> str:
        return str(self.input_path.relative_to(CUSTOMIZATIONS_DIR))


def run_health_script(script: str, obj: dict[str, Any], chunk_name: str = "health.lua") -> dict[str, str]:
    """Status and message as Argo CD would report them; raises lupa's LuaError if the script fails."""
    runtime = lua51.LuaRuntime(register_eval=False, register_builtins=False, unpack_returned_tuples=True)
    sandbox = runtime.eval(SANDBOX.replace("INSTRUCTION_LIMIT", str(INSTRUCTION_LIMIT)))
    # Argo CD hands the script the object as decoded from JSON: no YAML-only types such as timestamps.
    as_json = json.loads(json.dumps(obj))
    result = sandbox(script, chunk_name, runtime.table_from(as_json, recursive=True))
    if lua51.lua_type(result) != "table":
        raise TypeError(f"expect table output from Lua script, not {lua51.lua_type(result)}")
    returned = dict(result.items())
    status, message = returned.get("status"), returned.get("message")
    if status not in HEALTH_STATUSES:
        return {"status": "Unknown", "message": "Lua returned an invalid health status"}
    return {"status": str(status), "message": "" if message is None else str(message)}


def load_object(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{path}: not a single object"
    return document


def health_cases() -> list[HealthCase]:
    cases: list[HealthCase] = []
    for script in sorted(CUSTOMIZATIONS_DIR.glob("*/*/health.lua")):
        tests = yaml.safe_load((script.parent / "health_test.yaml").read_text())["tests"]
        cases.extend(
            HealthCase(
                script=script,
                input_path=script.parent / test["inputPath"],
                status=test["healthStatus"]["status"],
                message=test["healthStatus"].get("message", ""),
            )
            for test in tests
        )
    return cases


CASES = health_cases()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_health_script_reports_the_expected_status(case: HealthCase) -> None:
    health = run_health_script(case.script.read_text(), load_object(case.input_path))

    assert health == {"status": case.status, "message": case.message}


def test_every_kind_has_a_health_check_with_its_own_tests() -> None:
    expected = {f"{GROUP}/{kind.kind}" for kind in KINDS}
    found = {str(path.relative_to(CUSTOMIZATIONS_DIR)) for path in CUSTOMIZATIONS_DIR.glob("*/*")}

    assert found == expected
    for directory in expected:
        assert (CUSTOMIZATIONS_DIR / directory / "health.lua").is_file()
        assert (CUSTOMIZATIONS_DIR / directory / "health_test.yaml").is_file()


@pytest.mark.parametrize("kind", KINDS, ids=[kind.kind for kind in KINDS])
def test_every_testdata_file_is_a_case_and_every_status_is_covered(kind: Kind) -> None:
    directory = CUSTOMIZATIONS_DIR / GROUP / kind.kind
    cases = [case for case in CASES if case.script.parent == directory]

    assert {case.input_path for case in cases} == set((directory / "testdata").glob("*.yaml"))
    assert {case.status for case in cases} >= {"Healthy", "Progressing", "Degraded"}
    for case in cases:
        document = load_object(case.input_path)
        assert document["kind"] == kind.kind, case.name
        # The status the scripts are tested on is one the operator can write.
        kind.status.model_validate(document.get("status", {}))


@pytest.mark.parametrize("kind", [kind.kind for kind in KINDS])
def test_a_script_with_the_wrong_answer_fails_the_cases(kind: str) -> None:
    """The comparison has teeth: a check that always answers Healthy disagrees with every other case."""
    cases = [case for case in CASES if case.script.parent.name == kind]
    always_healthy = 'return {status = "Healthy", message = "fine"}'

    disagreeing = {
        case.name
        for case in cases
        if run_health_script(always_healthy, load_object(case.input_path))
        != {"status": case.status, "message": case.message}
    }

    assert disagreeing == {case.name for case in cases}


@pytest.mark.parametrize(
    "script",
    [
        'return {status = string.format("%s", "Healthy")}',
        'return {status = ("Healthy"):lower()}',
        "return {status = math.floor(1)}",
        'return {status = io.read("*l")}',
        'return {status = os.execute("true")}',
        "return {status = coroutine.running()}",
        "return {status = debug.getinfo(1).short_src}",
    ],
)
def test_the_sandbox_has_only_what_argo_cd_opens(script: str) -> None:
    with pytest.raises(lua51.LuaError, match="attempt to"):
        run_health_script(script, {"kind": "Probe"})


def test_the_sandbox_has_what_argo_cd_opens() -> None:
    script = """
    local parts = {}
    for _, part in ipairs({"a", "b"}) do table.insert(parts, part) end
    local message = table.concat(parts, ",") .. " " .. type(os.time()) .. " " .. obj.kind
    return {status = "Healthy", message = message}
    """

    assert run_health_script(script, {"kind": "Probe"}) == {
        "status": "Healthy",
        "message": "a,b number Probe",
    }


def test_an_unknown_status_becomes_unknown_as_in_argo_cd() -> None:
    health = run_health_script('return {status = "Fine"}', {"kind": "Probe"})

    assert health == {"status": "Unknown", "message": "Lua returned an invalid health status"}


def test_a_runaway_script_is_stopped() -> None:
    with pytest.raises(lua51.LuaError, match="instruction limit"):
        run_health_script("while true do end", {"kind": "Probe"})


def test_committed_argocd_cm_is_what_the_scripts_generate() -> None:
    assert ARGOCD_CM.read_text() == render_argocd_cm(), (
        "deploy/argocd/argocd-cm.yaml is stale: run hack/gen_argocd_cm.py"
    )


def test_argocd_cm_carries_every_script_under_argo_cd_key() -> None:
    data = yaml.safe_load(render_argocd_cm())["data"]

    assert data == {
        f"resource.customizations.health.{GROUP}_{kind.kind}": (
            CUSTOMIZATIONS_DIR / GROUP / kind.kind / "health.lua"
        ).read_text()
        for kind in KINDS
    }
