"""Values that would reach the SLURM job script or fail only at run time are refused when the sweep file or run config
is validated: `an-lab plan` and `an-lab sweep --executor slurm` exit 2 with one line naming the key and what is
allowed, and write nothing. And no text of the sweep file reaches a line of the job script other than an #SBATCH
comment line, shown on the script submitit itself renders."""

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import an_lab
from submitit.slurm.slurm import _make_sbatch_string

from an_lab.config import resolve
from an_lab.errors import UsageError
from an_lab.launch.slurm_sbatch import sbatch_parameters
from an_lab.launch.slurm_shape import Shape
from an_lab.sweeps.spec import SlurmSettings, load_sweep


def job_parameters(sweep, settings, code, count: int) -> dict:
    """The sbatch parameters of a one-task CPU job array of `count` runs of the sweep."""
    shape = Shape(nodes=1, tasks_per_node=1, gpus_per_node=settings.gpus_per_node or 0, cpus_per_task=1)
    return sbatch_parameters(settings, shape, code, count, f"an-lab-{sweep.name}", sweep.spec.launcher.max_parallel)


PWNED = "touch {tmp}/pwned"  # what the hostile values try to run; the tests check that nothing made the file


def sweep_tree(tmp_path: Path, slurm: dict | None = None, **top) -> dict:
    tree = {
        "name": "hostile",
        "mode": "ablation",
        "base": {"data": {"name": "fake"}},
        "output_dir": str(tmp_path / "out"),
    }
    tree["launcher"] = {"executor": "slurm", "slurm": {"gpus_per_node": 0, "time": 10, **(slurm or {})}}
    tree.update(top)
    return tree


def write_sweep(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(tree, allow_unicode=False))  # control characters written as YAML escapes
    assert yaml.safe_load(path.read_text()) == tree  # the hostile value reaches the loader unchanged
    return path


def assert_refused(result: subprocess.CompletedProcess, path: Path, tmp_path: Path, *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: {path}"), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.count("\n") == 1  # one line: control characters are shown escaped
    assert not (tmp_path / "out").exists() and not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Defect 1: launcher.slurm values -> #SBATCH lines

KEY_RULE = "is not an sbatch option name as submitit spells it"
SLURM_CASES = {
    # field: (value, what the message says)
    "partition_newline": ("partition", "gpu\n" + PWNED, "give a partition name or a comma list of them"),
    "partition_carriage_return": ("partition", "gpu\r", "give a partition name"),
    "partition_semicolon": ("partition", "gpu;" + PWNED, "letters, digits, '_', '.', '-'"),
    "partition_space_in_list": ("partition", "gpu, cpu", "comma list"),
    "account_nul": ("account", "acct\0", "give an account name"),
    "account_command_substitution": ("account", "$(" + PWNED + ")", "give an account name"),
    "qos_escape": ("qos", "normal\x1b[2J", "give a QOS name"),
    "qos_int": ("qos", 5, "give a QOS name"),
    "constraint_newline": ("constraint", "gpu\n" + PWNED, "a node feature expression"),
    "constraint_backquote": ("constraint", "gpu`" + PWNED + "`", "a node feature expression"),
    "constraint_tab": ("constraint", "gpu\tcpu", "a node feature expression"),
    "time_newline": ("time", "10\n#SBATCH --wrap=x", "is not a SLURM time limit"),
    "time_format": ("time", "1-2:3:4:5", "'D-HH:MM:SS'"),
    "time_zero": ("time", 0, "more than 0"),
    "time_bool": ("time", True, "is not a SLURM time limit"),
    "time_non_ascii_digits": ("time", "\u0663\u0660", "is not a SLURM time limit"),
    "time_ten_years": ("time", 10 * 366 * 24 * 60 + 1, "at most 10 years"),
    "mem_newline": ("mem", "64G\n" + PWNED, "is not a SLURM memory size"),
    "mem_space": ("mem", "64 GB", "optional unit K, M, G or T"),
    "mem_unit": ("mem", "64X", "optional unit K, M, G or T"),
    "key_newline": ("additional_parameters", {"x\n" + PWNED: 1}, KEY_RULE),
    "key_dash": ("additional_parameters", {"mail-type": "END"}, "write 'mail_type'"),
    "key_upper": ("additional_parameters", {"A": "x"}, KEY_RULE),
    "key_equals": ("additional_parameters", {"comment=x": "y"}, KEY_RULE),
    "key_wrap": ("additional_parameters", {"wrap": PWNED}, "key 'wrap' may not be set here"),
    "key_array": ("additional_parameters", {"array": "0-99"}, "submitit sets it"),
    "key_output": ("additional_parameters", {"output": "/dev/null"}, "submitit sets it"),
    "key_output_abbreviated": ("additional_parameters", {"outp": "/dev/null"}, "sbatch reads it as --output"),
    "key_parsable": ("additional_parameters", {"parsable": True}, "would then print no job id"),
    "key_job_name": ("additional_parameters", {"job_name": "x"}, "an-lab sets it"),
    "key_partition": ("additional_parameters", {"partition": "gpu"}, "give it as launcher.slurm.partition"),
    "value_newline": ("additional_parameters", {"comment": "x\n" + PWNED}, "holds the control character '\\n'"),
    "value_line_separator": ("additional_parameters", {"comment": "x\u2028y"}, "holds the control character"),
    "value_zero_width": ("additional_parameters", {"comment": "x\u200by"}, "holds the control character"),
    "value_empty": ("additional_parameters", {"comment": ""}, "the value is empty"),
    "value_too_long": ("additional_parameters", {"comment": "x" * 257}, "257 characters long; at most 256"),
    "value_false": ("additional_parameters", {"requeue": False}, "no_requeue"),
    "value_float": ("additional_parameters", {"nice": 1.5}, "is not a string, an integer or true"),
    "value_list": ("additional_parameters", {"exclude": ["a", "b"]}, "is not a string, an integer or true"),
    "value_null": ("additional_parameters", {"hold": None}, "is not a string, an integer or true"),
}


@pytest.mark.parametrize("case", sorted(SLURM_CASES))
def test_hostile_slurm_settings_are_refused_by_plan_and_by_sweep(tmp_path, case):
    field, value, message = SLURM_CASES[case]
    if isinstance(value, str):
        value = value.replace("{tmp}", str(tmp_path))
    elif isinstance(value, dict):
        value = {key.replace("{tmp}", str(tmp_path)): item for key, item in value.items()}
    path = write_sweep(tmp_path, sweep_tree(tmp_path, {field: value}))
    for command in (["plan", path], ["sweep", path, "--executor", "slurm"]):
        result = an_lab(*command, cwd=tmp_path, timeout=120)
        assert_refused(result, path, tmp_path, f"launcher.slurm.{field}: ", message)
    with pytest.raises(UsageError):
        load_sweep(path)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [  # YAML double quotes turn \\n into a line break
        ('launcher.slurm.partition="gpu\\ntouch {tmp}/pwned"', "(from --set): launcher.slurm.partition: 'gpu\\ntouch"),
        ('launcher.slurm.account="a\\rb"', "(from --set): launcher.slurm.account: 'a\\rb' is not valid"),
        ('launcher.slurm.qos="q\\u0000"', "(from --set): launcher.slurm.qos: 'q\\x00' is not valid"),
        ('launcher.slurm.constraint="gpu\\n#"', "(from --set): launcher.slurm.constraint: 'gpu\\n#' is not valid"),
        ("launcher.slurm.time=1-2:3:4:5", "(from --set): launcher.slurm.time: '1-2:3:4:5' is not a SLURM time limit"),
        ('launcher.slurm.mem="1G\\n"', "(from --set): launcher.slurm.mem: '1G\\n' is not a SLURM memory size"),
        # The file's additional_parameters and --set ones are checked together: the message names the key.
        ('launcher.slurm.additional_parameters.comment="x\\ny"', "comment: 'x\\ny' holds the control character '\\n'"),
        ("launcher.slurm.additional_parameters.wrap=id", "launcher.slurm.additional_parameters: key 'wrap' may not"),
    ],
)
def test_hostile_slurm_overrides_are_refused(tmp_path, assignment, message):
    path = write_sweep(tmp_path, sweep_tree(tmp_path))
    for command in (["plan", path], ["sweep", path, "--executor", "slurm"]):
        result = an_lab(*command, "--set", assignment.replace("{tmp}", str(tmp_path)), cwd=tmp_path, timeout=120)
        assert_refused(result, path, tmp_path, message)


def test_sweep_names_with_control_characters_or_over_64_characters_are_refused(tmp_path):
    for name, message in (("a\n" + PWNED, "is not usable as a folder or job name"), ("n" * 65, "at most 64")):
        path = write_sweep(tmp_path, sweep_tree(tmp_path, name=name))
        for command in (["plan", path], ["sweep", path, "--executor", "slurm"]):
            assert_refused(an_lab(*command, cwd=tmp_path, timeout=120), path, tmp_path, "name: the sweep name", message)


def test_valid_unusual_slurm_settings_pass(tmp_path):
    slurm = {
        "partition": "gpu-a100,gpu_h100.big",
        "account": "proj.ml-01",
        "qos": "high_prio",
        "time": "2-12:30:00",
        "mem": 512000,  # megabytes, as sbatch reads a bare number
        "constraint": "[rack1*2&rack2*1]|(a100&!mig)",
        "additional_parameters": {"mail_type": "END,FAIL", "hold": True, "nice": 10, "gpus": 0, "no_requeue": True},
    }
    path = write_sweep(tmp_path, sweep_tree(tmp_path, slurm, name="n" * 64))
    result = an_lab("plan", path, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    settings = load_sweep(path).spec.launcher.slurm
    assert settings.mem == "512000" and settings.time == "2-12:30:00"
    assert settings.additional_parameters["gpus"] == 0  # --gpus is an option of its own, not --gpus-per-node cut short


def sbatch_lines(script: str) -> tuple[list[str], list[str]]:
    """(the #SBATCH lines, the lines bash runs: neither blank nor a comment)."""
    lines = script.splitlines()
    return [line for line in lines if line.startswith("#SBATCH ")], [
        line for line in lines if line.strip() and not line.lstrip().startswith("#")
    ]


def test_user_text_reaches_only_sbatch_comment_lines_of_submitits_script(tmp_path):
    marker = "zqx"  # in every value the sweep file controls
    slurm = {
        "partition": f"{marker}p1,{marker}.p-2",
        "account": f"{marker}_acct",
        "qos": f"{marker}-qos",
        "time": "1-02:03:04",
        "mem": "64GB",
        "cpus_per_task": 4,
        "constraint": f"[{marker}a*2&{marker}b*1]|({marker}c&!{marker}d)",
        "additional_parameters": {
            "comment": f"{marker} $({PWNED}) `id` ; | & > < 'single' \"double\" \\ # {{tmp}}".replace(
                "{tmp}", str(tmp_path)
            ),
            "mail_user": f"{marker}@example.org",
            "mail_type": f"END,{marker.upper()}",
            "hold": True,
            "nice": 7,
        },
    }
    path = write_sweep(tmp_path, sweep_tree(tmp_path, slurm, name=f"{marker}-odd.sweep_1"))
    sweep = load_sweep(path)
    code = tmp_path / "code dir $(id) 'q' \"d\"" / "0123abcd"  # an-lab quotes the snapshot path it exports
    parameters = job_parameters(sweep, sweep.spec.launcher.slurm, code, 3)
    script = _make_sbatch_string(
        command="/usr/bin/python3 -u -m submitit.core._submit /logs/%j",
        folder=tmp_path / "logs" / "%j",
        map_count=3,
        **parameters,
    )
    sbatch, commands = sbatch_lines(script)

    # Lines bash runs: submitit's template (the executor variable, srun with the command) and an-lab's setup only.
    template = {"export SUBMITIT_EXECUTOR=slurm"}
    srun = [line for line in commands if line.startswith("srun --unbuffered --output ")]
    assert len(srun) == 1 and srun[0].endswith("python3 -u -m submitit.core._submit /logs/%j")
    assert set(commands) == template | set(parameters["setup"]) | set(srun), commands
    assert marker not in " ".join(commands) and marker.upper() not in " ".join(commands)

    # Every user value is on its own #SBATCH line, and nowhere else.
    expected = {
        "--partition": f"{marker}p1,{marker}.p-2",
        "--account": f"{marker}_acct",
        "--qos": f"{marker}-qos",
        "--constraint": slurm["constraint"],
        "--comment": slurm["additional_parameters"]["comment"],
        "--mail-user": f"{marker}@example.org",
        "--mail-type": f"END,{marker.upper()}",
        "--job-name": f"an-lab-{marker}-odd.sweep_1",
        "--mem": "64GB",
        "--nice": "7",
        "--time": str(26 * 60 + 4),  # 1-02:03:04 rounded up to whole minutes
    }
    values = {}
    for line in sbatch:
        option, _, value = line.removeprefix("#SBATCH ").partition("=")
        values[option] = shlex.split(value)[0] if value else True
    for option, value in expected.items():
        assert values[option] == value, (option, script)
    assert values["--hold"] is True and values["--requeue"] is True and values["--array"] == "0-2%1"
    for line in script.splitlines():
        if marker in line.lower():
            assert line.startswith("#SBATCH --"), line

    # bash parses the script, and the exported snapshot path is one word, whatever it holds.
    assert subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True).returncode == 0
    export = parameters["setup"][0]
    shown = subprocess.run(
        ["bash", "-c", f'{export}\nprintf %s "$PYTHONPATH"'],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert shown.stdout == str(code)
    assert not (tmp_path / "pwned").exists()


def test_the_script_check_catches_what_validation_would_have_refused(tmp_path):
    """Without SlurmSettings' checks a line break in the partition becomes a command of the job; sbatch_parameters
    refuses such settings (built without validation) before submitit renders them."""
    sweep = load_sweep(write_sweep(tmp_path, sweep_tree(tmp_path)))
    hostile = SlurmSettings.model_construct(**{**sweep.spec.launcher.slurm.model_dump(), "partition": "gpu\nid"})
    good = job_parameters(sweep, sweep.spec.launcher.slurm, tmp_path / "code", 1)
    _, commands = sbatch_lines(_make_sbatch_string(command="true", folder=tmp_path, **{**good, "partition": "gpu\nid"}))
    assert "id'" in commands  # what the defect looked like: the rest of the value runs as a shell line
    with pytest.raises(UsageError, match=re.escape("partition: 'gpu\\nid' holds the control character '\\n'")):
        job_parameters(sweep, hostile, tmp_path / "code", 1)
    with pytest.raises(UsageError, match="holds the control character"):
        job_parameters(sweep, sweep.spec.launcher.slurm, tmp_path / "a\nb" / "code" / "0123", 1)


# ---------------------------------------------------------------------------------------------------------------------
# Defect 8: numbers and names that pass validation but fail at run time

BOUND_CASES = {
    # case: (sweep file text after the common head, message fragments)
    "sweep_seed_negative": ("seeds: [0, -1]\n", ("seeds[1]: Input should be greater than or equal to 0",)),
    "sweep_seed_2_32": ("seeds: [4294967296]\n", ("seeds[0]: Input should be less than 4294967296",)),
    "sweep_seed_float": ("seeds: [1.0e26]\n", ("seeds[0]: Input should be a valid integer",)),
    "sweep_seed_bool": ("seeds: [true]\n", ("seeds[0]: Input should be a valid integer",)),
    "trainer_seed_negative": (
        "base: {trainer: {seed: -1}}\n",
        ("trainer.seed: Input should be greater than or equal to 0",),
    ),
    "trainer_seed_1e26": ("base: {trainer: {seed: 1e26}}\n", ("trainer.seed: Input should be a valid integer",)),
    "k_1e11": ("base: {model: {an: {k: 100000000000}}}\n", ("model.an.k: k=100000000000", "from 1 to 1024")),
    "k_axis_value": ("axes: {model.an.k: [[10, 10, 20], [10, 10, 2048]]}\n", ("axes.model.an.k[1]", "from 1 to 1024")),
    "k_float": ("base: {model: {an: {k: 10.0}}}\n", ("model.an.k: k=10.0 is not valid",)),
    "lr_inf": ("base: {optim: {base_lr: .inf}}\n", ("optim.base_lr: Input should be a finite number",)),
    "mixup_inf": ("base: {optim: {mixup_alpha: .inf}}\n", ("optim.mixup_alpha: Input should be a finite number",)),
    "lr_bool": ("base: {optim: {base_lr: true}}\n", ("optim.base_lr: expected a number, not True",)),
    "epochs_true": ("base: {trainer: {epochs: true}}\n", ("trainer.epochs: Input should be a valid integer",)),
    "epochs_fraction": ("base: {trainer: {epochs: 1.5}}\n", ("trainer.epochs: Input should be a valid integer",)),
    "epochs_huge": (
        "base: {trainer: {epochs: 100001}}\n",
        ("trainer.epochs: Input should be less than or equal to 100000",),
    ),
    "batch_size": (
        "base: {data: {batch_size: 65537}}\n",
        ("data.batch_size: Input should be less than or equal to 65536",),
    ),
    "fake_size": (
        "base: {data: {fake_size: 10000001}}\n",
        ("data.fake_size: Input should be less than or equal to 10000000",),
    ),
    "devices": (
        "base: {trainer: {devices: 0}}\n",
        ("trainer.devices: devices must be 'auto' or the processes per node",),
    ),
    "slurm_nodes_fraction": (
        "launcher: {slurm: {nodes: 1.5}}\n",
        ("launcher.slurm.nodes: Input should be a valid integer",),
    ),
    "sweep_name_300": ("name: " + "n" * 300 + "\n", ("name: the sweep name", "is 300 characters long; at most 64")),
    "baseline_name_65": (
        "baselines: {" + "b" * 65 + ": {model.norm: bn}}\n",
        ("baselines: the baseline name", "is 65 characters long; at most 64"),
    ),
    "axis_name_65": (
        "axes: {" + "a" * 65 + ": [{trainer.epochs: 1}, {trainer.epochs: 2}]}\n",
        ("axes: the axis name", "is 65 characters long; at most 64"),
    ),
}


@pytest.mark.parametrize("case", sorted(BOUND_CASES))
def test_out_of_range_values_are_refused_by_plan(tmp_path, case):
    text, fragments = BOUND_CASES[case]
    head = "" if text.startswith("name:") else "name: bounds\n"
    path = tmp_path / "bounds.yaml"
    path.write_text(f"{head}mode: ablation\noutput_dir: {tmp_path / 'out'}\n{text}")
    assert_refused(an_lab("plan", path, timeout=120), path, tmp_path, *fragments)


RUN_CONFIG_CASES = [
    ({"trainer": {"seed": -1}}, "trainer.seed: Input should be greater than or equal to 0"),
    ({"trainer": {"seed": 2**32}}, "trainer.seed: Input should be less than 4294967296"),
    ({"trainer": {"seed": 1e26}}, "trainer.seed: Input should be a valid integer"),
    ({"trainer": {"seed": "1e26"}}, "trainer.seed: Input should be a valid integer"),
    ({"trainer": {"epochs": True}}, "trainer.epochs: Input should be a valid integer"),
    ({"trainer": {"epochs": "12"}}, "trainer.epochs: Input should be a valid integer"),
    ({"trainer": {"epochs": 100_001}}, "trainer.epochs: Input should be less than or equal to 100000"),
    ({"trainer": {"devices": 257}}, "trainer.devices: devices must be 'auto' or the processes per node, 1 to 256"),
    ({"trainer": {"devices": True}}, "trainer.devices: devices must be 'auto'"),
    ({"trainer": {"num_nodes": 10_001}}, "trainer.num_nodes: Input should be less than or equal to 10000"),
    ({"trainer": {"limit_train_batches": 2.0}}, "trainer.limit_train_batches: Input should be a valid integer"),
    ({"trainer": {"compile": 1}}, "trainer.compile: Input should be a valid boolean"),
    ({"trainer": {"deterministic": "yes"}}, "trainer.deterministic: Input should be a valid boolean"),
    ({"model": {"an": {"k": 10**11}}}, "model.an.k: k=100000000000 is not valid"),
    ({"model": {"an": {"k": [10, 10, 1025]}}}, "each an integer from 1 to 1024"),
    ({"model": {"an": {"k": [10, True, 20]}}}, "model.an.k: k=[10, True, 20] is not valid"),
    ({"model": {"an": {"k": []}}}, "model.an.k: k=[] is not valid"),
    ({"model": {"zero_init_residual": "true"}}, "model.zero_init_residual: Input should be a valid boolean"),
    ({"data": {"image_size": 4097}}, "data.image_size: Input should be less than or equal to 4096"),
    ({"data": {"batch_size": 65_537}}, "data.batch_size: Input should be less than or equal to 65536"),
    ({"data": {"num_workers": 257}}, "data.num_workers: Input should be less than or equal to 256"),
    ({"data": {"fake_size": 10**7 + 1}}, "data.fake_size: Input should be less than or equal to 10000000"),
    ({"data": {"num_classes": 100_001}}, "data.num_classes: Input should be less than or equal to 100000"),
    ({"data": {"num_classes": 10.0}}, "data.num_classes: Input should be a valid integer"),
    ({"data": {"download": "no"}}, "data.download: Input should be a valid boolean"),
    ({"optim": {"base_lr": float("inf")}}, "optim.base_lr: Input should be a finite number"),
    ({"optim": {"base_lr": "inf"}}, "optim.base_lr: Input should be a finite number"),
    ({"optim": {"weight_decay": float("nan")}}, "optim.weight_decay: Input should be"),
    ({"optim": {"mixup_alpha": float("inf")}}, "optim.mixup_alpha: Input should be a finite number"),
    ({"optim": {"label_smoothing": True}}, "optim.label_smoothing: expected a number, not True"),
    ({"optim": {"warmup_epochs": 100_001}}, "optim.warmup_epochs: Input should be less than or equal to 100000"),
    ({"optim": {"nesterov": 0}}, "optim.nesterov: Input should be a valid boolean"),
]


@pytest.mark.parametrize(("tree", "message"), RUN_CONFIG_CASES)
def test_out_of_range_run_configs_are_refused_by_resolve(tree, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        resolve(tree, "run.yaml")


def test_the_bounds_themselves_and_yaml_spellings_of_numbers_are_accepted():
    config = resolve(
        {
            "model": {"name": "resnet18", "an": {"k": [1, 1024, 10, 20]}},
            "data": {"image_size": 4096, "batch_size": 65_536, "num_workers": 0, "fake_size": 10**7},
            "optim": {"base_lr": "1e-3", "weight_decay": 0, "mixup_alpha": 0.2},  # YAML 1.1 reads 1e-3 as a string
            "trainer": {"epochs": 100_000, "seed": 2**32 - 1, "devices": "auto", "num_nodes": 10_000},
        }
    )
    assert config.model.an.k == (1, 1024, 10, 20) and config.optim.base_lr == 0.001
    assert config.optim.weight_decay == 0.0 and config.trainer.seed == 2**32 - 1
    assert resolve({"model": {"an": {"k": 1024}}}).model.an.k == 1024
