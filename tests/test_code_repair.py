"""Code repair (DistiLRR): the seed-17 split, program assembly and extraction with
tree-sitter, the paper's pass/fail rule on real toolchains, pass@k, the repair loop and its
rationale analysis with a scripted method, the two-stage repair methods, and distillation."""

from __future__ import annotations

import json
import os
import random
import shutil
from types import SimpleNamespace

import pytest

from harness.api import ActRequest, ChatMessage, Doc, GenerateResult, LoglikelihoodResult
from harness.data import DataStore
from harness.errors import IncompatibleError
from harness.task import EvalSettings
from tasks.code_languages import LANGUAGES, assemble, code_block, run_program, syntax_errors
from tasks.code_repair import load_problems, pass_at_k
from tests.conftest import cli

REQUIRE = os.environ.get("HARNESS_REQUIRE_TOOLCHAINS") == "1"

# A correct full-function answer to MBXP problem 1 (minimum cost path) per language, the way a
# chat model writes one: prose around a fenced block, sometimes with an import of its own.
MIN_COST = {
    "python": "Here it is:\n```python\nimport itertools\n\ndef min_cost(cost, m, n):\n    tc = [[0] * (n + 1) for _ in range(m + 1)]\n"
              "    for i, j in itertools.product(range(m + 1), range(n + 1)):\n"
              "        best = min([tc[a][b] for a, b in ((i - 1, j - 1), (i - 1, j), (i, j - 1)) if a >= 0 and b >= 0], default=0)\n"
              "        tc[i][j] = best + cost[i][j]\n    return tc[m][n]\n```\nDone.",
    "perl": "```perl\nsub min_cost {\n  my ($cost, $m, $n) = @_;\n  my @tc;\n  for my $i (0..$m) { for my $j (0..$n) {\n"
            "    my @c = grep { defined } ($i && $j ? $tc[$i-1][$j-1] : undef, $i ? $tc[$i-1][$j] : undef, $j ? $tc[$i][$j-1] : undef);\n"
            "    my $b = @c ? (sort { $a <=> $b } @c)[0] : 0;\n    $tc[$i][$j] = $b + $cost->[$i][$j]; } }\n  return $tc[$m][$n];\n}\n```",
    "ruby": "```ruby\ndef min_cost(cost, m, n)\n  tc = Array.new(m + 1) { Array.new(n + 1, 0) }\n  (0..m).each do |i|\n    (0..n).each do |j|\n"
            "      c = []\n      c << tc[i - 1][j - 1] if i > 0 && j > 0\n      c << tc[i - 1][j] if i > 0\n      c << tc[i][j - 1] if j > 0\n"
            "      tc[i][j] = (c.min || 0) + cost[i][j]\n    end\n  end\n  tc[m][n]\nend\n```",
    "go": "```go\nimport \"sort\"\n\nfunc min_cost(cost [][]int, m int, n int) int {\n\ttc := make([][]int, m+1)\n\tfor i := range tc {\n\t\ttc[i] = make([]int, n+1)\n\t}\n"
          "\tfor i := 0; i <= m; i++ {\n\t\tfor j := 0; j <= n; j++ {\n\t\t\tc := []int{}\n"
          "\t\t\tif i > 0 && j > 0 {\n\t\t\t\tc = append(c, tc[i-1][j-1])\n\t\t\t}\n\t\t\tif i > 0 {\n\t\t\t\tc = append(c, tc[i-1][j])\n\t\t\t}\n"
          "\t\t\tif j > 0 {\n\t\t\t\tc = append(c, tc[i][j-1])\n\t\t\t}\n\t\t\tsort.Ints(c)\n\t\t\tb := 0\n\t\t\tif len(c) > 0 {\n\t\t\t\tb = c[0]\n\t\t\t}\n"
          "\t\t\ttc[i][j] = b + cost[i][j]\n\t\t}\n\t}\n\treturn tc[m][n]\n}\n```",
    "php": "```php\n<?php\nfunction minCost($cost, $m, $n) {\n    $tc = [];\n    for ($i = 0; $i <= $m; $i++) {\n        for ($j = 0; $j <= $n; $j++) {\n"
           "            $c = [];\n            if ($i > 0 && $j > 0) $c[] = $tc[$i-1][$j-1];\n            if ($i > 0) $c[] = $tc[$i-1][$j];\n"
           "            if ($j > 0) $c[] = $tc[$i][$j-1];\n            $tc[$i][$j] = ($c ? min($c) : 0) + $cost[$i][$j];\n        }\n    }\n    return $tc[$m][$n];\n}\n```",
    "javascript": "```javascript\nfunction minCost(cost, m, n) {\n  const tc = [];\n  for (let i = 0; i <= m; i++) {\n    tc.push([]);\n    for (let j = 0; j <= n; j++) {\n"
                  "      const c = [];\n      if (i > 0 && j > 0) c.push(tc[i-1][j-1]);\n      if (i > 0) c.push(tc[i-1][j]);\n      if (j > 0) c.push(tc[i][j-1]);\n"
                  "      tc[i].push((c.length ? Math.min(...c) : 0) + cost[i][j]);\n    }\n  }\n  return tc[m][n];\n}\n```",
    "java": "```java\nclass MinCost {\n    public static int minCost(List<List<Integer>> cost, int m, int n) {\n        int[][] tc = new int[m + 1][n + 1];\n"
            "        for (int i = 0; i <= m; i++) {\n            for (int j = 0; j <= n; j++) {\n                int b = Integer.MAX_VALUE;\n"
            "                if (i > 0 && j > 0) b = Math.min(b, tc[i-1][j-1]);\n                if (i > 0) b = Math.min(b, tc[i-1][j]);\n"
            "                if (j > 0) b = Math.min(b, tc[i][j-1]);\n                tc[i][j] = (b == Integer.MAX_VALUE ? 0 : b) + cost.get(i).get(j);\n"
            "            }\n        }\n        return tc[m][n];\n    }\n}\n```",
}


def _first_problem(mirror, language: str) -> dict:
    path = mirror / LANGUAGES[language].mbxp
    row = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    return {key: row[key] for key in ("task_id", "prompt", "test", "entry_point")}


def _toolchain(language: str) -> None:
    if not LANGUAGES[language].available():
        if REQUIRE:
            pytest.fail(f"{LANGUAGES[language].binary} is not installed (scripts/install.sh installs it)")
        pytest.skip(f"{LANGUAGES[language].binary} not installed")


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5)
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(5, 1, 5) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)


def test_mbxp_split_is_the_papers_seed_17_shuffle(mirror):
    data = DataStore(mirror)
    language = LANGUAGES["perl"]
    rows = [json.loads(line)["task_id"] for line in (mirror / language.mbxp).read_text().splitlines() if line.strip()]
    random.seed(17)  # the paper's download_data.py
    random.shuffle(rows)
    test = [p["task_id"] for p in load_problems(data, language, "mbxp", "test")]
    distill = [p["task_id"] for p in load_problems(data, language, "mbxp", "distill")]
    assert distill == rows[:800] and test == rows[800:] and len(test) == 166
    assert len(load_problems(data, language, "humaneval-xl", "test")) == 80
    assert len(load_problems(data, LANGUAGES["go"], "mbxp", "test")) == 939 - 800


@pytest.mark.parametrize("language", ["python", "perl", "ruby", "go", "php", "javascript", "java"])
def test_a_correct_chat_answer_passes_and_a_wrong_one_fails(mirror, language):
    _toolchain(language)
    lang, problem = LANGUAGES[language], _first_problem(mirror, language)
    code, program = assemble(lang, problem, MIN_COST[language])
    assert problem["test"] in program and code in program and not syntax_errors(lang, program)
    result = run_program(lang, program)
    assert result.passed, result.error
    wrong = MIN_COST[language].replace("tc[m][n]", "tc[0][0]").replace("tc[$m][$n]", "tc[0][0]")
    failed = run_program(lang, assemble(lang, problem, wrong)[1])
    assert not failed.passed and failed.error


def test_extraction_keeps_functions_and_imports_and_falls_back_to_completion(mirror):
    lang, problem = LANGUAGES["python"], _first_problem(mirror, "python")
    code, _ = assemble(lang, problem, MIN_COST["python"])
    assert "import itertools" in code and "Here it is" not in code and "Done." not in code
    # a continuation of the prompt's open function (a base model's answer) is scored as mxeval does
    body = "\treturn 8 if cost[0][0] == 1 else (12 if cost[0][0] == 2 else 16)\n"
    code, program = assemble(lang, problem, body)
    assert code == problem["prompt"] + body and run_program(lang, program).passed
    # a java answer's method is moved into the prompt's class; helpers come along, main does not
    java = LANGUAGES["java"]
    answer = "```java\nclass X {\n  static int helper() { return 1; }\n  public static int minCost(List<List<Integer>> c, int m, int n) { return helper(); }\n" \
             "  public static void main(String[] a) {}\n}\n```"
    code, _ = assemble(java, _first_problem(mirror, "java"), answer)
    assert "helper()" in code and "void main" not in code and code.rstrip().endswith("}")
    assert code_block("```perl\nsub a {}\n```\n```python\nx\n```", LANGUAGES["python"]) == "x\n"


def test_syntax_errors_are_flagged_with_a_line():
    lang = LANGUAGES["python"]
    assert syntax_errors(lang, "def f(:\n    return 1\n")[0].startswith("line 1")
    assert syntax_errors(lang, "def f():\n    return 1\n") == []
    assert syntax_errors(LANGUAGES["go"], "package main\nfunc f() int {\n\treturn 1\n") != []


def test_a_language_without_a_toolchain_is_one_clear_error(mirror, monkeypatch):
    from harness.runner import make_task

    monkeypatch.setattr(shutil, "which", lambda binary, *a, **k: None)
    task = make_task("code-repair", {"language": "swift"})
    with pytest.raises(IncompatibleError, match="needs the 'swift' toolchain"):
        task.load_docs(DataStore(mirror))


class ScriptedRepairer:
    """Writes a wrong program first; a repair turn explains and fixes it (or not)."""

    loaded = None  # the judge loads like the run's model; the stub judge below needs none

    def __init__(self, fix: bool) -> None:
        from harness.method import Cost

        self.fix, self.requests, self.cost = fix, [], Cost()

    def act(self, requests):
        self.requests += requests
        out = []
        for request in requests:
            if request.stage == "write":
                out.append(GenerateResult("def min_cost(cost, m, n):\n    return 0\n", 9, "stop"))
            else:
                fixed = MIN_COST["python"] if self.fix else "```python\ndef min_cost(cost, m, n):\n    return -1\n```"
                out.append(GenerateResult("The function ignores the matrix.\n\n" + fixed, 30, "stop",
                                          {"rationale": "The function ignores the matrix."}))
        return out


@pytest.mark.parametrize("fix", [True, False])
def test_repair_loop_feeds_errors_back_and_scores_each_round(mirror, monkeypatch, fix):
    from harness.runner import make_task

    task = make_task("code-repair", {"language": "python", "samples": 3, "repair_samples": 2, "rounds": 2, "judge": "tiny-random-llama"})
    problem = _first_problem(mirror, "python")

    def loglikelihood(requests):  # the judge calls every rationale good
        return [LoglikelihoodResult(-0.1 if r.continuation == " yes" else -3.0, False, 1) for r in requests]

    from harness.method import Cost

    judge = SimpleNamespace(loglikelihood=loglikelihood, loaded=SimpleNamespace(has_chat_template=False), cost=Cost())
    monkeypatch.setattr(task, "_judge_lm", judge)
    method = ScriptedRepairer(fix)
    (record,) = task.evaluate([Doc(problem["task_id"], problem)], method, EvalSettings(True, 0))
    write = [r for r in method.requests if r.stage == "write"]
    repair = [r for r in method.requests if r.stage == "repair"]
    assert len(write) == 3 and write[0].messages[-1].role == "assistant" and write[0].until == ("```",)
    assert write[0].temperature == 0.2 and write[0].top_p == 0.95
    assert len(repair) == (2 if fix else 4)  # fixed programs are not repaired again
    assert "AssertionError" in repair[0].messages[0].content and "return 0" in repair[0].messages[0].content
    assert record["pass@1/round-0"] == 0.0
    assert record["pass@1/round-1"] == record["pass@1/round-2"] == (1.0 if fix else 0.0)
    assert record["n_rationales"] == len(repair) and record["n_good"] == len(repair)
    assert record["n_good_fixed" if fix else "n_good_wrong"] == len(repair)
    sample = record["samples"][0]
    assert sample["repairs"][0]["rationale"] == "The function ignores the matrix." and sample["repairs"][0]["judge_p_good"] > 0.9
    values = task.aggregate([{**record, "doc_id": "a"}], 0)
    assert values["pass@1"].value == (1.0 if fix else 0.0) and values["rationale/good_fixed"].value == (1.0 if fix else 0.0)


class StubLM:
    """Answers generate() from a script (for the two-stage repair and distillation builder)."""

    def __init__(self, answers):
        self.answers, self.seen = list(answers), []

    def generate(self, requests):
        self.seen += requests
        return [GenerateResult(self.answers.pop(0), 5, "stop") for _ in requests]


def test_two_stage_repair_puts_the_rationale_before_the_code():
    from methods.self_repair import two_stage_repair

    teacher, student = StubLM(["Use the matrix."]), StubLM(["def f():\n    return 1\n"])
    request = ActRequest((ChatMessage("user", "fix it:\n```python\ndef f():\n    return 0\n```\nError: x"),), 64, (), 0.2, 0.95, "repair")
    (result,) = two_stage_repair(teacher, student, [request], 32)
    assert teacher.seen[0].until == ("```",) and teacher.seen[0].max_new_tokens == 32
    continued = student.seen[0].prompt
    assert continued[-1] == ChatMessage("assistant", "Use the matrix.\n\n```python\n") and student.seen[0].until == ("```",)
    assert result.text == "Use the matrix.\n\n```python\ndef f():\n    return 1\n```" and result.info["rationale"] == "Use the matrix."
    assert code_block(result.text, LANGUAGES["python"]) == "def f():\n    return 1\n"


def test_distillation_keeps_the_first_passing_teacher_repair(mirror):
    from training.distilrr import DistillSpec, _distil_one

    spec = DistillSpec(teacher="t", student="s", languages=("python",), student_tries=2, teacher_tries=3)
    problem = _first_problem(mirror, "python")
    student = StubLM(["def min_cost(cost, m, n):\n    return 0\n"] * 2)
    wrong = "def min_cost(cost, m, n):\n    return 1\n"
    right = code_block(MIN_COST["python"], LANGUAGES["python"])
    teacher = StubLM(["Think again.", "Use dynamic programming.", "Hmm.", wrong, right, wrong])
    row = _distil_one(spec, LANGUAGES["python"], problem, student, teacher)
    assert row["kept"] and row["teacher_attempt"] == 2 and row["rationale"] == "Use dynamic programming."
    assert "return 0" in row["incorrect_code"] and "AssertionError" in row["error"] and "def min_cost" in row["fixed_code"]
    solved = _distil_one(spec, LANGUAGES["python"], problem, StubLM([MIN_COST["python"].split("```python\n")[1].split("```")[0]] * 2), teacher)
    assert not solved["kept"] and "passed every try" in solved["skipped"]


def test_distilrr_trains_a_zoo_checkpoint_and_repairs_with_it(mirror, tmp_path, monkeypatch):
    from harness import zoo
    from training.distilrr import DistillSpec, train_distilrr, training_answer

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    zoo.local_zoo.cache_clear() if hasattr(zoo.local_zoo, "cache_clear") else None
    spec = DistillSpec(teacher="gemma3-270m", student="tiny-random-llama", languages=("python",), problems=2,
                       epochs=1, batch_size=2, lora_r=4, lora_alpha=8, learning_rate=1e-3, max_length=256)
    pool = load_problems(DataStore(mirror), LANGUAGES["python"], "mbxp", "distill")[:2]
    folder = zoo.local_zoo_dir() / f".distill-{spec.name}-{spec.digest('set')}"
    folder.mkdir(parents=True)
    rows = [{"language": "python", "task_id": pool[0]["task_id"], "kept": True, "incorrect_code": "def f():\n    return 0",
             "error": "AssertionError", "rationale": "Return one.", "fixed_code": "def f():\n    return 1"},
            {"language": "python", "task_id": pool[1]["task_id"], "kept": False, "skipped": "no teacher repair passed"}]
    (folder / "distill_set.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert training_answer(rows[0]) == "Return one.\n\n```python\ndef f():\n    return 1\n```"
    name = train_distilrr(spec, DataStore(mirror), show_progress=False)  # set complete: no model generates
    meta = json.loads((zoo.local_zoo_dir() / name / zoo.RECIPE_FILE).read_text())
    assert name == "tiny-random-llama-distilrr-python" and meta["method"] == "distilrr" and meta["data"]["examples"] == 1
    runs = tmp_path / "runs"
    base = ["run", "--task", "code-repair", "--model", "tiny-random-llama", "--limit", "1", "--quiet", "--output-dir", runs,
            "--task-arg", "language=python", "--task-arg", "samples=1", "--task-arg", "repair_samples=1", "--task-arg", "rounds=1",
            "--task-arg", "max_new_tokens=8", "--task-arg", "judge=none"]
    assert cli(*base, "--method", "distilrr", "--method-arg", f"checkpoint={name}") == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    results = json.loads((run / "results.json").read_text())
    assert {"pass@1", "pass@1/round-0", "pass@1/round-1"} <= set(results["metrics"])
    assert results["method_settings"]["checkpoint"] == name
    assert cli(*base, "--method", "distilrr", "--method-arg", "checkpoint=gemma3-270m") == 2  # not a distilrr checkpoint


def test_self_repair_runs_end_to_end_on_a_tiny_model(tmp_path):
    runs = tmp_path / "runs"
    assert cli("run", "--task", "code-repair", "--method", "self-repair", "--model", "tiny-random-llama", "--limit", "2",
               "--quiet", "--output-dir", runs, "--task-arg", "language=perl", "--task-arg", "samples=2",
               "--task-arg", "repair_samples=1", "--task-arg", "rounds=1", "--task-arg", "max_new_tokens=8",
               "--method-arg", "rationale_tokens=4", "--task-arg", "judge=tiny-random-llama") == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    results = json.loads((run / "results.json").read_text())
    assert results["metrics"]["pass@1"]["value"] == 0.0  # a random model writes no working Perl
    assert results["protocol"]["execution"]["pass"] == "exit 0 and empty stderr"
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 and all(len(s["samples"]) == 2 and len(s["samples"][0]["repairs"]) == 1 for s in samples)
