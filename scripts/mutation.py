"""Mutation audit: plant one-line bugs in the numerical core and check that each module's own tests catch them.

    python scripts/mutation.py                      # the seeded sample, one worker: results/mutation.md
    python scripts/mutation.py --sample 0           # every mutant (hours on 2 cores)
    python scripts/mutation.py --only clocks.py:96:1 trainer.py:120:0   # rerun given mutants
    python scripts/mutation.py --list               # the mutants, nothing run

Mutants are generated from the AST of dynamics_bench/{trainer,clocks,integrators,losses,batches}.py, metrics/,
tasks/ and models/: operator swaps (+ −, * /, ** → *), augmented assignments, comparison boundaries and
negations (< ↔ <=, == ↔ !=, is ↔ is not, in ↔ not in), and ↔ or, a dropped `not` or unary minus, constants
(n → n + 1, c → 2c, 0.0 → 1.0, True ↔ False) and dropped call statements. Docstrings, strings, f-strings,
annotations and decorators are left alone. Each mutant changes one line and compiles.

Each mutant runs `pytest -x -q` over its module's tests (TESTS below), in a temporary copy of the repository
(the working tree is never touched: other people may be editing it), with one thread and a per-mutant timeout.
A mutant is killed when the tests fail or time out, survives when they pass. The module's tests must pass
unmutated first (the baseline), else its mutants are reported as not run. With --sample k a fixed-seed sample of
k mutants is drawn, allotted to the files in proportion to their mutants (at least one each), so a run fits the
time box (the default 80 took 30 minutes on a loaded 2-core machine); the report says so. A survivor that cannot
change behaviour goes in EQUIVALENT with the reason; the kill ratio is over the others. --root audits another
checkout (a snapshot of a known revision while the working tree is being edited). Not part of CI.
"""
from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("dynamics_bench/trainer.py", "dynamics_bench/clocks.py", "dynamics_bench/integrators.py",
           "dynamics_bench/losses.py", "dynamics_bench/batches.py", "dynamics_bench/metrics/",
           "dynamics_bench/tasks/", "dynamics_bench/models/")
# each target's own tests, quickest first (-x stops at the first failure); a passing set takes 5-30 s
TESTS: dict[str, tuple[str, ...]] = {
    "dynamics_bench/trainer.py": ("tests/test_loop.py", "tests/test_dynamics.py", "tests/test_integrators.py",
                                  "tests/test_checkpoint.py"),
    "dynamics_bench/clocks.py": ("tests/test_metrics.py", "tests/test_integrators.py", "tests/test_loop.py",
                                 "tests/test_checkpoint.py"),
    "dynamics_bench/integrators.py": ("tests/test_integrators.py",),
    "dynamics_bench/losses.py": ("tests/test_losses.py", "tests/test_objectives.py"),
    "dynamics_bench/batches.py": ("tests/test_batches.py", "tests/test_loop.py", "tests/test_dynamics.py"),
    "dynamics_bench/metrics/": ("tests/test_metrics.py", "tests/test_invariants.py", "tests/test_instruments.py",
                                "tests/test_ntk_hessian.py"),
    "dynamics_bench/tasks/": ("tests/test_tasks.py", "tests/test_task_settings.py"),
    "dynamics_bench/models/": ("tests/test_models.py", "tests/test_vector_case.py", "tests/test_theory_inits.py"),
}
SEED, SAMPLE, TIMEOUT = 0, 80, 150

# (file, line, mutated line), without comments, of survivors that cannot change behaviour, and why: the report
# counts them apart
EQUIVALENT: dict[tuple[str, str, str], str] = {
    ("metrics/hessian.py", "w = torch.where(exhausted[:, None], _orthogonalize(fresh, basis[:, :j + 1]), w)",
     "w = torch.where(exhausted[:, None], _orthogonalize(fresh, basis[:, :j + 2]), w)"):
        "basis row j + 1 is still zeros when step j restarts: projecting on it subtracts exactly 0",
    ("metrics/ntk.py", "BLOCK_BYTES = 256 * 2**20", "BLOCK_BYTES = 256 * 2*20"):
        "a memory bound only: J is formed in blocks of one row instead of many, K is the same",
    ("models/base.py", "ERF_PANELS, ERF_ORDER = 32, 20", "ERF_PANELS, ERF_ORDER = 32, 21"):
        "a quadrature of higher order: the erf potential moves by round-off (20 nodes are already within 1e-13)",
    ("models/two_layer.py", "return ACTIVATIONS[activation].fn(x @ directions.T) * signs, y[:, 0]",
     "return ACTIVATIONS[activation].fn(x @ directions.T) / signs, y[:, 0]"):
        "signs are ±1: z/±1 and z·±1 are the same float",
    ("models/two_layer.py", "keep = lam > EIGEN_CUTOFF * lam.max()", "keep = lam >= EIGEN_CUTOFF * lam.max()"):
        "differs only for an eigenvalue exactly at the cutoff (lam.max() > 0: a kernel's diagonal is positive)",
    ("tasks/base.py", "u, s, vh = torch.linalg.svd(matrix, full_matrices=False)",
     "u, s, vh = torch.linalg.svd(matrix, full_matrices=True)"):
        "only the first r columns are kept, the same in the full SVD (their signs are fixed after)",
    ("tasks/classification.py", "u = gaussian(gen, (input_dim,), 1.0)", "u = gaussian(gen, (input_dim,), 2.0)"):
        "u is normalized on the next line, and a power-of-two scale cancels exactly",
    ("trainer.py", "rows = torch.stack([torch.where(fired, first, -1), diverged.long()]).tolist()",
     "rows = torch.stack([torch.where(fired, first, -2), diverged.long()]).tolist()"):
        "only the sign of 'no event' is read (i >= 0)",
    ("trainer.py", "if 0 <= hit < n - 1:", "if 0 <= hit <= n - 1:"):
        "a stop on the window's last step goes back and retakes the same steps to the same state: cost only",
    ("trainer.py", "if 0 <= hit < n - 1:", "if 0 <= hit < n + 1:"):
        "hit ≤ n − 1 always: as `<=`, a needless go-back to the same state",
    ("trainer.py", "limit, frozen = max(limit // 2, 1), freeze and size > 1 and not locate",
     "limit, frozen = max(limit // 2, 1), freeze and size > 2 and not locate"):
        "two-member ensembles keep going back instead of freezing: both record the same (tests/test_loop.py), "
        "only the cost differs",
    ("trainer.py", "limit = min(2 * limit, WINDOW)", "limit = min(3 * limit, WINDOW)"):
        "windows regrow faster after a go-back: the same steps are taken, only the host reads fall elsewhere",
    ("metrics/ntk.py", "BLOCK_BYTES = 256 * 2**20", "BLOCK_BYTES = 256 / 2**20"):
        "a memory bound only: J is formed in blocks of one row instead of many, K is the same",
    ("metrics/lojasiewicz.py", "positive = excess if excess > 0 else NAN",
     "positive = excess if excess >= 0 else NAN"):
        "at excess 0 both give NaN cells: _ratio(·, 0) is NaN",
}

BINOPS = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "/"), ast.Div: ("/", "*"),
          ast.Pow: ("**", "*"), ast.FloorDiv: ("//", "/")}
CMPOPS = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">"),
          ast.Eq: ("==", "!="), ast.NotEq: ("!=", "=="), ast.Is: ("is", "is not"), ast.IsNot: ("is not", "is"),
          ast.In: ("in", "not in"), ast.NotIn: ("not in", "in")}
BOOLOPS = {ast.And: ("and", "or"), ast.Or: ("or", "and")}


@dataclass(frozen=True)
class Mutant:
    path: str  # relative to the repository root
    line: int  # 1-based
    start: int  # byte offsets into the line
    end: int
    new: bytes
    old_line: str
    index: int = 0  # its rank among the mutants of the line: path:line:index names it

    @property
    def name(self) -> str:
        return f"{self.path.removeprefix('dynamics_bench/')}:{self.line}:{self.index}"

    def new_line(self) -> str:
        raw = self.old_line.encode()
        return (raw[:self.start] + self.new + raw[self.end:]).decode()

    def apply(self, source: str) -> str:
        lines = source.splitlines(keepends=True)
        assert lines[self.line - 1].startswith(self.old_line), f"{self.name}: the file changed"
        ending = lines[self.line - 1][len(self.old_line):]
        lines[self.line - 1] = self.new_line() + ending
        return "".join(lines)


class _Finder(ast.NodeVisitor):
    """Collects (line, start, end, replacement) edits of one-line mutations, in byte offsets."""

    def __init__(self, lines: list[bytes]):
        self.lines, self.edits = lines, []

    def _gap(self, left: ast.AST, right: ast.AST, old: str, new: str) -> None:
        """Replace operator `old` between two operands on one line."""
        if left.end_lineno != right.lineno:
            return
        line = self.lines[right.lineno - 1]
        gap = line[left.end_col_offset:right.col_offset]
        if gap.strip(b" ()") != old.encode():
            return
        at = left.end_col_offset + gap.index(old.encode())
        self.edits.append((right.lineno, at, at + len(old.encode()), new.encode()))

    def _replace(self, node: ast.AST, new: str) -> None:
        if node.lineno == node.end_lineno:
            self.edits.append((node.lineno, node.col_offset, node.end_col_offset, new.encode()))

    def generic_visit(self, node: ast.AST) -> None:
        for field in ("annotation", "returns", "decorator_list"):  # types and decorators: not behaviour
            if hasattr(node, field):
                setattr(node, field, None if field != "decorator_list" else [])
        super().generic_visit(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        """f-strings are messages."""

    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Call):
            self._replace(node, "pass")  # a dropped call
        if not isinstance(node.value, ast.Constant):  # docstrings
            self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if type(node.op) in BINOPS:
            self._gap(node.left, node.right, *BINOPS[type(node.op)])
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if type(node.op) in BINOPS:
            old, new = BINOPS[type(node.op)]
            self._gap(node.target, node.value, old + "=", new + "=")
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        for left, op, right in zip([node.left, *node.comparators], node.ops, node.comparators):
            if type(op) in CMPOPS:
                self._gap(left, right, *CMPOPS[type(op)])
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        for left, right in zip(node.values, node.values[1:]):
            self._gap(left, right, *BOOLOPS[type(node.op)])
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        dropped = isinstance(node.op, ast.Not) or (isinstance(node.op, ast.USub)
                                                   and not isinstance(node.operand, ast.Constant))
        if dropped and node.lineno == node.operand.lineno:
            self.edits.append((node.lineno, node.col_offset, node.operand.col_offset, b""))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):
            self._replace(node, repr(not value))
        elif isinstance(value, int):
            self._replace(node, repr(value + 1))
        elif isinstance(value, float):
            self._replace(node, repr(2 * value if value else 1.0))


def mutants_of(root: Path, path: str) -> list[Mutant]:
    """Every one-line mutant of a file (under root) that compiles and changes the line, ranked per line."""
    source = (root / path).read_text()
    lines = source.encode().splitlines()
    finder = _Finder(lines)
    finder.visit(ast.parse(source))
    found, per_line = [], {}
    for line, start, end, new in sorted(set(finder.edits)):
        mutant = Mutant(path, line, start, end, new, lines[line - 1].decode(), per_line.get(line, 0))
        if mutant.new_line() == mutant.old_line or not _compiles(mutant.apply(source)):
            continue
        per_line[line] = mutant.index + 1
        found.append(mutant)
    return found


def _compiles(source: str) -> bool:
    try:
        compile(source, "<mutant>", "exec")
    except SyntaxError:
        return False
    return True


def target_files(root: Path) -> list[str]:
    files = []
    for target in TARGETS:
        found = sorted((root / target).rglob("*.py")) if target.endswith("/") else [root / target]
        files += [p.relative_to(root).as_posix() for p in found]
    return files


def tests_for(path: str) -> tuple[str, ...]:
    return next(tests for prefix, tests in TESTS.items() if path.startswith(prefix))


def sample(mutants: list[Mutant], k: int, seed: int) -> list[Mutant]:
    """k mutants (all if k is 0 or more than there are), each file's share in proportion to its mutants, at
    least one, drawn with a fixed seed."""
    if k <= 0 or k >= len(mutants):
        return mutants
    rng, by_file = random.Random(seed), {}
    for m in mutants:
        by_file.setdefault(m.path, []).append(m)
    chosen = []
    for path, group in sorted(by_file.items()):
        share = max(1, round(k * len(group) / len(mutants)))
        chosen += rng.sample(group, min(share, len(group)))
    return sorted(chosen, key=lambda m: (m.path, m.line, m.index))


def copy_repo(source: Path, dest: Path) -> None:
    """A snapshot of the tree at source, without caches or outputs: the files git knows of (tracked, and untracked
    but not ignored), or, outside a git checkout, the package, tests and scripts."""
    if (source / ".git").exists():
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=source, capture_output=True,
                                text=True, check=True).stdout.splitlines()
    else:
        listed = [p.relative_to(source).as_posix() for top in ("dynamics_bench", "tests", "scripts")
                  for p in (source / top).rglob("*") if "__pycache__" not in p.parts]
        listed += ["pyproject.toml", "README.md"]
    for rel in listed:
        src = source / rel
        if src.is_file() or src.is_symlink():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target, follow_symlinks=False)


def pytest(root: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float]:
    """'passed', 'failed' or 'timeout', and the seconds taken."""
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=root, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start
    return ("passed" if proc.returncode == 0 else "failed"), time.perf_counter() - start


def audit(root: Path, mutants: list[Mutant], timeout: float,
          log: Callable[[str], None]) -> tuple[dict[Mutant, str], dict[tuple[str, ...], str]]:
    """Each mutant's outcome ('killed', 'timeout', 'survived' or 'not run') in the copy at root, and each test
    set's baseline."""
    outcomes, baselines = {}, {}
    for m in mutants:
        tests = tests_for(m.path)
        if tests not in baselines:
            baselines[tests] = pytest(root, tests, 3 * timeout)[0]
            log(f"baseline {' '.join(tests)}: {baselines[tests]}")
        if baselines[tests] != "passed":
            outcomes[m] = "not run"
            continue
        target = root / m.path
        original = target.read_text()
        target.write_text(m.apply(original))
        try:
            result, seconds = pytest(root, tests, timeout)
        finally:
            target.write_text(original)
        outcomes[m] = {"failed": "killed", "timeout": "timeout", "passed": "survived"}[result]
        log(f"{outcomes[m]:8s} {seconds:6.1f}s {m.name}: {m.new_line().strip()}")
    return outcomes, baselines


def _code(line: str) -> str:
    return line.split("  #")[0].strip()


def equivalent(m: Mutant) -> str | None:
    """Why a mutant cannot change behaviour, if it is one of the known equivalent ones."""
    return EQUIVALENT.get((m.path.removeprefix("dynamics_bench/"), _code(m.old_line), _code(m.new_line())))


def report(outcomes: dict[Mutant, str], baselines: dict, total: int, command: str, minutes: float, how: str) -> str:
    ran = [m for m, o in outcomes.items() if o != "not run"]
    killed = [m for m in ran if outcomes[m] in ("killed", "timeout")]
    survivors = [m for m in ran if outcomes[m] == "survived"]
    same = [m for m in survivors if equivalent(m)]
    live = len(ran) - len(same)
    lines = ["# Mutation audit", "",
             f"`{command}`: {len(outcomes)} of the {total} one-line mutants of "
             f"{', '.join(t.removeprefix('dynamics_bench/') for t in TARGETS)} "
             f"({how}), "
             f"each against its module's own tests (scripts/mutation.py TESTS), one worker: {minutes:.0f} minutes.",
             "",
             f"**Killed {len(killed)} of {live} non-equivalent mutants ({100 * len(killed) / max(live, 1):.0f}%)**; "
             f"{len(ran)} run, {sum(outcomes[m] == 'timeout' for m in ran)} of the kills by timeout, "
             f"{len(same)} survivors equivalent, {len(survivors) - len(same)} live survivors, "
             f"{len(outcomes) - len(ran)} not run (their tests fail unmutated).", "",
             "| tests | unmutated |", "|---|---|"]
    lines += [f"| {' '.join(t)} | {b} |" for t, b in baselines.items()]
    lines += ["", "## Survivors", "", "| mutant | line | mutation | equivalent because |", "|---|---|---|---|"]
    lines += [f"| {m.name} | `{m.old_line.strip()}` | `{m.new_line().strip()}` | {equivalent(m) or '**live**'} |"
              for m in survivors]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--sample", type=int, default=SAMPLE, help="mutants to draw (0: all)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds per mutant")
    parser.add_argument("--only", nargs="*", help="mutants by name (path:line:index), no sampling")
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "mutation.md")
    parser.add_argument("--root", type=Path, default=REPO, help="the checkout to audit (default: this one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        root = Path(tmp)
        copy_repo(args.root, root)  # a snapshot: the mutants' lines are those of the files they run in
        everything = [m for path in target_files(root) for m in mutants_of(root, path)]
        chosen = ([m for m in everything if m.name in set(args.only)] if args.only
                  else sample(everything, args.sample, args.seed))
        if args.list:
            print("\n".join(f"{m.name}: {m.new_line().strip()}" for m in chosen))
            print(f"{len(chosen)} of {len(everything)} mutants", file=sys.stderr)
            return
        start = time.perf_counter()
        outcomes, baselines = audit(root, chosen, args.timeout, lambda line: print(line, flush=True))
    command = "python scripts/mutation.py " + " ".join(sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    how = ("the ones named" if args.only else "all" if len(chosen) == len(everything) else
           f"a sample drawn with seed {args.seed}, each file in proportion to its mutants")
    args.out.write_text(report(outcomes, baselines, len(everything), command.strip(),
                               (time.perf_counter() - start) / 60, how))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
