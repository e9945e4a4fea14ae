"""Hostile values against every generated file, each read back by its consumer.

One corpus (newlines, quotes, `$`, backticks, `%`, backslashes, ESC, NUL, non-ASCII, very
long values, separators) goes into every value a generator takes from outside pcimgr: the
shell words of the Proxmox script and of the initramfs hook and dracut module, nova.conf's
options, the ConfigMap's YAML, the udev rules and the systemd units. Each must either be
refused with one line (BadInput) or come back unchanged from its consumer: sh/bash running
the script with stub commands, PyYAML, oslo.config (the Nova venv's where installed, else
its substitution rule), systemd-analyze verify, and udev (udevadm test as root with udev
installed, and a reader of the rule syntax everywhere).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import string
import subprocess
from pathlib import Path

import pytest
import yaml

from pcimgr.advice import early_claim
from pcimgr.core.errors import BadInput
from pcimgr.core.escaping import shell
from pcimgr.core.escaping import yaml as yaml_layer
from pcimgr.fleet import k8s, nova, proxmox
from pcimgr.fleet.pools import Member, Pool
from pcimgr.persist import udev
from tests.conftest import tree
from tests.test_exports import NOVA_PYTHON, export, pcimgr, prepared

CORPUS = {
    "plain": "node-1.example",
    "newline": "a\nb",
    "double quote": 'a"b',
    "single quote": "a'b",
    "dollar": "a$b",
    "parameter": "${IFS}",
    "command substitution": "$(touch PWNED)",
    "backtick": "`touch PWNED`",
    "semicolon": ";touch${IFS}PWNED;",
    "percent": "a%kb%%",
    "backslash": "a\\b\\",
    "ESC": "a\x1b[31mb",
    "NUL": "a\0b",
    "non-ASCII": "é中😀",
    "line separator": "a\u2028b\x85c",
    "not UTF-8": "a\udcffb",
    "space": "a b",
    "glob": "*",
    "separators": "a,path=0000:00:02.0",
    "hash": "#x",
    "very long": "/".join(["d" * 200] * 15),
}
VALUES = pytest.mark.parametrize("value", CORPUS.values(), ids=CORPUS.keys())


def refused(call) -> bool:
    """True if call refused with one printable line; False if it returned."""
    try:
        call()
    except BadInput as e:
        message = str(e)
        assert "\n" not in message and message.isascii() and message.isprintable(), message
        return True
    return False


def _pool(**changes: str) -> Pool:
    member = {k: changes.pop(k) for k in ("address", "subsystem") if k in changes}
    m = Member(member.get("address", "0000:04:00.0"), 14, member.get("subsystem", "8086:125e"),
               None, None, None)
    fields = {"host": "node1", "vendor_id": "8086", "device_id": "105e"} | changes
    return Pool(fields["host"], fields["vendor_id"], fields["device_id"], "vfio-pci", True,
                "pci", (m,))


def _stubbed(tmp_path: Path, *names: str) -> dict[str, str]:
    """PATH with stubs that write their arguments, NUL-separated, to ./NAME.args."""
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    for name in names:
        (stubs / name).write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" >> "{name}.args"\n')
        (stubs / name).chmod(0o755)
    return {"PATH": f"{stubs}:/usr/bin:/bin", "LC_ALL": "C.UTF-8"}


def _run_shell(shell_name: str, script: Path, cwd: Path, env: dict[str, str],
               *args: str) -> None:
    check = subprocess.run([shell_name, "-n", str(script)], capture_output=True)
    assert check.returncode == 0, check.stderr
    r = subprocess.run([shell_name, str(script), *args], capture_output=True, cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr


# shell words: the layer itself


@VALUES
def test_a_shell_word_reaches_the_command_unchanged(tmp_path: Path, value: str) -> None:
    script = tmp_path / "s.sh"
    if refused(lambda: shell.word(value, "x")):
        assert "\0" in value or "\udcff" in value
        return
    script.write_text(f"record {shell.word(value, 'x')}\n")
    _run_shell("sh", script, tmp_path, _stubbed(tmp_path, "record"))
    assert (tmp_path / "record.args").read_bytes() == value.encode() + b"\0"
    assert not (tmp_path / "PWNED").exists()


# Proxmox: the pvesh script run with a stub pvesh


@VALUES
@pytest.mark.parametrize("field", ["host", "vendor_id", "device_id", "address", "subsystem"])
def test_the_proxmox_script_passes_facts_values_as_one_property_each(
        tmp_path: Path, field: str, value: str) -> None:
    pool = _pool(**{field: value})
    out: list[str] = []
    if refused(lambda: out.append(proxmox.pvesh(proxmox.mappings([pool])))):
        return
    script = tmp_path / "pvesh.sh"
    script.write_text(out[0])
    _run_shell("sh", script, tmp_path, _stubbed(tmp_path, "pvesh"))
    args = (tmp_path / "pvesh.args").read_bytes().decode().split("\0")[:-1]
    assert args[:4] == ["create", "/cluster/mapping/pci", "--id", pool.name]
    assert args[6:7] == ["--map"] and len(args) == 8
    assert dict(kv.split("=", 1) for kv in args[7].split(",")) == {
        "node": pool.host, "path": pool.members[0].address,
        "id": f"{pool.vendor_id}:{pool.device_id}",
        "subsystem-id": pool.members[0].subsystem, "iommugroup": "14"}
    assert sorted(os.listdir(tmp_path)) == ["pvesh.args", "pvesh.sh", "stubs"]


# nova.conf: oslo.config's reading of a value


class _NoOption(dict):
    """oslo.config's StrSubWrapper for a file that defines no option to substitute."""

    def __getitem__(self, key: str) -> str:
        raise AssertionError(f"oslo.config would substitute ${key}: Nova refuses to start")


class _OsloTemplate(string.Template):
    idpattern = r"[_a-z][\._a-z0-9]*"  # oslo_config.cfg.ConfigOpts._substitute's


def oslo_values(conf: str) -> dict[str, list[str]]:
    """[pci]'s options as oslo.config reads them: key = value lines (a line starting with
    whitespace would continue the value), stripped, then $ substitution."""
    lines = conf.splitlines()
    assert lines[0] == "[pci]"
    found: dict[str, list[str]] = {}
    for line in lines[1:]:
        assert line and not line[0].isspace(), line
        key, value = line.split("=", 1)
        found.setdefault(key.strip(), []).append(
            _OsloTemplate(value.strip()).safe_substitute(_NoOption()))
    return found


@VALUES
@pytest.mark.parametrize("field", ["vendor_id", "device_id", "address", "physnet"])
def test_nova_reads_back_every_value_of_its_device_spec(field: str, value: str) -> None:
    physnet = value if field == "physnet" else "physnet1"
    pool = _pool(**({} if field == "physnet" else {field: value}))
    out: list[str] = []
    if refused(lambda: out.append(nova.config([pool], physnet))):
        return
    options = oslo_values(out[0])
    assert [json.loads(s) for s in options["device_spec"]] == nova.device_specs([pool], physnet)
    assert [json.loads(a) for a in options["alias"]] == nova.aliases([pool])


OSLO_READ = """
import json, sys
from oslo_config import cfg
conf = cfg.ConfigOpts()
conf.register_opts([cfg.MultiStrOpt("device_spec"), cfg.MultiStrOpt("alias")], "pci")
conf([], project="nova", default_config_files=[sys.argv[1]])
print(json.dumps({"device_spec": conf.pci.device_spec, "alias": conf.pci.alias}))
"""


def test_oslo_config_itself_reads_back_every_value(tmp_path: Path) -> None:
    """Nova's own oslo.config (.cache/nova-venv, `scripts/run setup_nova`) on one file with
    a device_spec per corpus value the layer takes."""
    if not NOVA_PYTHON.exists():
        pytest.skip(f"no Nova at {NOVA_PYTHON} (scripts/run test installs it)")
    pools = [_pool(vendor_id=v) for v in CORPUS.values()
             if not refused(lambda v=v: nova.config([_pool(vendor_id=v)], None))]
    conf = tmp_path / "nova.conf"
    conf.write_text(nova.config(pools, "physnet1"))
    r = subprocess.run([str(NOVA_PYTHON), "-c", OSLO_READ, str(conf)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    read = json.loads(r.stdout)
    assert [json.loads(s) for s in read["device_spec"]] == nova.device_specs(pools, "physnet1")
    assert [json.loads(a) for a in read["alias"]] == nova.aliases(pools)


def test_a_dollar_in_a_facts_value_is_oslo_s_escape_in_nova_conf() -> None:
    conf = nova.config([_pool(vendor_id="80$86")], None)
    assert '"vendor_id": "80$$86"' in conf
    assert json.loads(oslo_values(conf)["device_spec"][0])["vendor_id"] == "80$86"


# the ConfigMap: PyYAML


@VALUES
@pytest.mark.parametrize("field", ["name", "namespace", "vendor_id"])
def test_the_configmap_is_one_document_carrying_each_value(field: str, value: str) -> None:
    config = k8s.device_plugin_config([_pool(**({field: value} if field == "vendor_id"
                                                else {}))], "example.com")
    names = {"name": "sriovdp-config", "namespace": "kube-system"}
    if field in names:
        names[field] = value
    out: list[str] = []
    if refused(lambda: out.append(k8s.configmap(config, names["name"], names["namespace"]))):
        return
    docs = list(yaml.safe_load_all(out[0]))
    assert len(docs) == 1 and set(docs[0]) == {"apiVersion", "kind", "metadata", "data"}
    assert docs[0]["kind"] == "ConfigMap" and docs[0]["metadata"] == names
    assert set(docs[0]["data"]) == {"config.json"}
    assert json.loads(docs[0]["data"]["config.json"]) == config


@VALUES
def test_a_yaml_scalar_reads_back(value: str) -> None:
    if "\udcff" in value:  # a str that is no Unicode text: no YAML file holds it
        return
    assert yaml.safe_load(f"k: {yaml_layer.scalar(value)}\n") == {"k": value}


# udev rules


RULE_PAIR = re.compile(r'\s*([A-Z_]+)(\{[^}]*\})?(==|!=|\+=|-=|:=|=)"([^"]*)"\s*(,|$)')


def udev_rule(line: str) -> list[tuple[str, str, str, str]]:
    """A rule line as udev's rule parser splits it: KEY{attr}OP"value" pairs, comma-separated,
    the value up to the next double quote (udev has no escape for it)."""
    pairs, at = [], 0
    while at < len(line):
        m = RULE_PAIR.match(line, at)
        assert m, f"udev would not parse {line[at:]!r}"
        pairs.append((m[1], m[2] or "", m[3], m[4]))
        at = m.end()
    return pairs


def _unescaped(value: str) -> str:
    """udev's own escapes: %% and $$ (a single % or $ starts a substitution)."""
    return re.sub(r"%%|\$\$", lambda m: m[0][0], value)


@VALUES
@pytest.mark.parametrize("what", ["cfg", "pcimgr"])
def test_the_udev_rules_run_exactly_pcimgr_with_the_config_dir(
        tmp_path: Path, what: str, value: str) -> None:
    cfg = value if what == "cfg" else "/etc/pcimgr"
    exe = value if what == "pcimgr" else "/usr/bin/pcimgr"
    out: list[str] = []
    if refused(lambda: out.append(udev.rules(exe, cfg))):
        return
    runs = []
    lines = [line for line in out[0].splitlines() if line and not line.startswith("#")]
    for line in lines:
        pairs = udev_rule(line)
        runs += [_unescaped(v) for key, _, _, v in pairs if key == "RUN" and "--config-dir" in v]
        tests = [_unescaped(v) for key, attr, _, v in pairs if key in ("TEST", "IMPORT")
                 and "PCI_ID" in v]
        assert tests in ([], [f"{cfg}/udev/%k_$env{{PCI_ID}}.env"])
    # RUN splits at whitespace: the words are the program and its arguments
    assert {tuple(r.split()) for r in runs} == {
        (exe, "--config-dir", cfg, "apply", "--device", "%k", "--quiet")}
    if shutil.which("udevadm"):  # verify: systemd 254+ (older ones say so and are skipped)
        (tmp_path / "70-pcimgr.rules").write_text(out[0])
        r = subprocess.run(["udevadm", "verify", "--no-style", str(tmp_path / "70-pcimgr.rules")],
                           capture_output=True, text=True)
        if "Unknown command" not in r.stderr and "unrecognized option" not in r.stderr:
            assert r.returncode == 0, r.stdout + r.stderr


def _udevadm_test(tmp_path: Path, rules: str, device: str) -> list[str]:
    """udevadm test's run: lines for an add of device with only these rules, in a private
    mount namespace (the live system's rules directories untouched)."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "rules/70-pcimgr.rules").write_text(rules)
    binds = "".join(f"{{ [ ! -d {dst} ] || mount --bind {shell.word(str(tmp_path / src), 'x')} "
                    f"{dst}; }} && "
                    for src, dst in (("rules", "/etc/udev/rules.d"),
                                     ("empty", "/usr/lib/udev/rules.d"),
                                     ("empty", "/run/udev/rules.d")))
    r = subprocess.run(["unshare", "--mount", "sh", "-c", f"{binds}exec udevadm test "
                        f"--action=add /sys/bus/pci/devices/{device}"],
                       capture_output=True, text=True, errors="replace")
    if "mount" in r.stderr and "run:" not in r.stdout:
        pytest.skip(f"no private mount namespace here: {r.stderr.strip()}")
    return [line for line in r.stdout.splitlines() if line.startswith("run: ")]


REAL_PCI = sorted(os.listdir("/sys/bus/pci/devices")) if os.path.isdir(
    "/sys/bus/pci/devices") else []


@pytest.mark.skipif(not (shutil.which("udevadm") and shutil.which("unshare") and REAL_PCI
                         and os.geteuid() == 0), reason="needs udevadm, root and a PCI bus")
@VALUES
def test_udev_itself_finds_the_env_file_and_runs_one_apply(tmp_path: Path, value: str) -> None:
    """udevadm test (as root, a real PCI function of this machine): the env file at the
    hostile path is found (TEST, IMPORT) and exactly one pcimgr command is run."""
    device = REAL_PCI[0]
    cfg = _config_dir(tmp_path, value)
    out: list[str] = []
    if cfg is None or refused(lambda: out.append(udev.rules("/usr/bin/pcimgr", str(cfg)))):
        return
    pci_id = next(line.split("=", 1)[1] for line in
                  Path(f"/sys/bus/pci/devices/{device}/uevent").read_text().splitlines()
                  if line.startswith("PCI_ID="))
    (cfg / f"udev/{device}_{pci_id}.env").write_text("PCIMGR_DRIVER=vfio-pci\n")
    runs = _udevadm_test(tmp_path, out[0], device)
    assert len(runs) == 1, runs
    # udevadm test substitutes the run list once more as it prints it (udevd runs each
    # command as the rules substituted it, once): compare exactly where that is the same
    if "%" not in value and "$" not in value:
        assert runs[0] == (f"run: '/usr/bin/pcimgr --config-dir {cfg} apply --device "
                           f"{device} --quiet'")


def test_a_quote_in_the_config_dir_is_refused_before_anything_is_written(
        run, demo_root: Path) -> None:
    """It would end the rule's value: what follows, a RUN+= of its own, runs at every
    PCI add as root."""
    cfg = f'{demo_root}/cfg", RUN+="/bin/touch /PWNED'
    before = tree(demo_root)
    r = run("--sysfs-root", demo_root, "--config-dir", cfg, "install-udev")
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "--config-dir" in r.output and "udev rule cannot carry" in r.output
    assert tree(demo_root) == before


def test_a_space_in_the_config_dir_is_refused_in_the_dry_run_too(run, demo_root: Path) -> None:
    r = run("--sysfs-root", demo_root, "--config-dir", f"{demo_root}/my config",
            "install-udev", "--dry-run")
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "' '" in r.output, r.output


# systemd units: systemd-analyze verify


def _verify(tmp_path: Path, exe: str, cfg: str) -> list[str] | None:
    """systemd-analyze's complaints about the two units, or None if pcimgr refused."""
    out: list[tuple[str, str]] = []
    if refused(lambda: out.extend([(udev.UNIT_NAME, udev.unit(exe, cfg)),
                                   (udev.TEMPLATE_NAME, udev.template(exe, cfg))])):
        return None
    problems = []
    for name, text in out:  # one at a time: a template is verified as its instance @i
        (tmp_path / name).write_text(text)
        r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / name)],
                           capture_output=True, text=True)
        problems += [line for line in r.stderr.splitlines() if "pcimgr-apply" in line]
    return problems


needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="no systemd-analyze")


@needs_systemd_analyze
@VALUES
def test_systemd_accepts_the_units_for_any_config_dir(tmp_path: Path, value: str) -> None:
    problems = _verify(tmp_path, "/bin/true", value)
    assert problems in (None, []), problems


@needs_systemd_analyze
@VALUES
def test_systemd_runs_exactly_the_pcimgr_path(tmp_path: Path, value: str) -> None:
    """A missing program is named as systemd read it ("Command PATH is not executable")."""
    exe = f"/nonexistent/{value}"
    problems = _verify(tmp_path, exe, "/etc/pcimgr")
    if problems is None:
        return
    assert len(problems) == 2, problems
    # systemd cuts a log line near 2 kB: a very long path shows as its start
    shown = f"Command {exe} is not executable" if len(exe) < 1500 else f"Command {exe[:1500]}"
    assert all(shown in p for p in problems), problems


# the initramfs-tools hook and the dracut module: sh and bash with stubs


def _config_dir(tmp_path: Path, value: str) -> Path | None:
    cfg = tmp_path / "c" / value.lstrip("/")
    try:
        (cfg / "udev").mkdir(parents=True)
    except (OSError, ValueError):  # NUL; no Python str path
        return None
    (cfg / "udev/0000:04:00.0_8086:105E.env").write_text("PCIMGR_DRIVER=vfio-pci\n")
    return cfg


@VALUES
def test_the_initramfs_hook_copies_the_env_files_of_any_config_dir(
        tmp_path: Path, value: str) -> None:
    cfg = _config_dir(tmp_path, value)
    text: list[str] = []
    if refused(lambda: text.append(early_claim.hook(str(cfg or f"/x/{value}")))):
        return
    assert cfg is not None
    functions = tmp_path / "hook-functions"
    functions.write_text("manual_add_modules() { :; }\n")
    hook = tmp_path / "hook"
    hook.write_text(text[0].replace("/usr/share/initramfs-tools/hook-functions",
                                    str(functions)))
    dest = tmp_path / "initramfs"
    dest.mkdir()
    _run_shell("sh", hook, tmp_path, {"PATH": "/usr/bin:/bin", "DESTDIR": str(dest)})
    assert os.listdir(dest / "etc/pcimgr/udev") == ["0000:04:00.0_8086:105E.env"]
    assert not (tmp_path / "PWNED").exists()


@VALUES
def test_the_dracut_module_copies_the_env_files_of_any_config_dir(
        tmp_path: Path, value: str) -> None:
    cfg = _config_dir(tmp_path, value)
    text: list[str] = []
    if refused(lambda: text.append(early_claim.dracut_module(str(cfg or f"/x/{value}")))):
        return
    assert cfg is not None
    module = tmp_path / "module-setup.sh"
    module.write_text(text[0])
    dest = tmp_path / "initramfs"
    dest.mkdir()
    script = tmp_path / "run.sh"
    script.write_text('inst_dir() { mkdir -p "$initdir$1"; }\n'
                      'inst_simple() { cp "$1" "$initdir$2"; }\n'
                      'instmods() { :; }\n'
                      f". {shell.word(str(module), 'm')}; check && installkernel && install\n")
    _run_shell("bash", script, tmp_path, {"PATH": "/usr/bin:/bin", "initdir": str(dest)})
    assert os.listdir(dest / "etc/pcimgr/udev") == ["0000:04:00.0_8086:105E.env"]
    assert not (tmp_path / "PWNED").exists()


# the command line: facts files and options


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("escaping") / "demo",
                    ("define", "04:00.0", "--driver", "vfio-pci", "--group"), ("apply",))


def _facts(demo: Path, path: Path, **changes: str) -> Path:
    """demo's facts with host and every device's vendor_id replaced."""
    facts = json.loads(export(demo, "facts", "--host-name", "node1"))
    facts["host"] = changes.get("host", facts["host"])
    for d in facts["devices"]:
        d["vendor_id"] = changes.get("vendor_id", d["vendor_id"])
    path.write_text(json.dumps(facts))
    return path


@pytest.mark.parametrize("changes", [{"vendor_id": "8086;touch${IFS}PWNED;"},
                                     {"host": "node1,path=0000:00:02.0"}])
def test_export_proxmox_refuses_facts_values_that_would_become_syntax(
        demo: Path, tmp_path: Path, changes: dict[str, str]) -> None:
    r = pcimgr(demo, "export", "proxmox", "--facts", str(_facts(demo, tmp_path / "f.json",
                                                                 **changes)))
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r.output


@pytest.mark.parametrize("option,value", [
    ("--configmap-name", "x\nkind: Secret"), ("--configmap-name", "UPPER"),
    ("--namespace", "kube-system\n---"), ("--namespace", "a.b"),
    ("--host-name", "node1,path=0000:00:02.0"), ("--host-name", "node\x1b[2J"),
    ("--physnet", "physnet1$x"), ("--physnet", "a:b"),
])
def test_options_are_checked_as_their_target_reads_them(demo: Path, option: str,
                                                        value: str) -> None:
    fmt = {"--configmap-name": "sriov-device-plugin", "--namespace": "sriov-device-plugin",
           "--host-name": "proxmox", "--physnet": "nova"}[option]
    extra = ("--configmap",) if fmt == "sriov-device-plugin" else ()
    r = pcimgr(demo, "export", fmt, *extra, option, value)
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r.output
    assert option in r.stderr and "\x1b" not in r.stderr
