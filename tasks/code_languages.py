"""Languages of the code-repair task (DistiLRR, PAPERS.md §6): data files, toolchains, how a
model's answer becomes a runnable program, and running it in the sandbox.

A program is assembled the way mxeval assembles one — the problem's prompt, the function,
then the problem's test code (Python adds ``check(<entry point>)``) — except that a chat
model answers with a whole function, not a continuation. So the answer's code block is
parsed with tree-sitter (tree-sitter-language-pack) and its top-level functions (methods, for
Java) replace the prompt's open signature; imports it adds are kept. An answer in which no
function named like the entry point is found is treated as mxeval treats a completion:
prompt + answer. The assembled program is parsed once more to flag syntax errors before it
runs. Pass/fail is the paper's: exit 0 and nothing on stderr; a compiler's diagnostics only
count when the build fails (javac prints notes on success).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

from harness.sandbox import Execution, Limits, execute

FENCE = re.compile(r"```[ \t]*([\w+#-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


@dataclass(frozen=True)
class Language:
    name: str
    resource: Literal["low", "high"]  # as the paper groups them
    filename: str
    command: tuple[str, ...]
    binary: str  # must be on PATH
    grammar: str  # tree-sitter-language-pack name
    function_types: tuple[str, ...]  # tree-sitter nodes that define a function
    import_types: tuple[str, ...]  # top-level nodes an answer may add (imports, `use`)
    signature: str  # regex of the entry point's definition line; {name} is filled in
    mbxp: str | None
    multi_humaneval: str | None
    humaneval_xl: str | None
    compile_s: float = 0.0  # wall time allowed for a build, on top of the run's timeout
    memory_mb: int = 1024
    env: dict[str, str] = field(default_factory=dict)
    # What the toolchain reads outside /usr (the sandbox's BASE_READS), read-only; nothing
    # else of the host is visible to the program.
    reads: tuple[str, ...] = ()
    closing: str = ""  # appended after the functions (Java closes the prompt's class)

    @property
    def label(self) -> str:
        return {"javascript": "JavaScript", "php": "PHP"}.get(self.name, self.name.capitalize())

    def available(self) -> bool:
        return shutil.which(self.binary) is not None


_JAVA_BUILD = ("javac -J-Xmx512m -J-XX:+UseSerialGC -nowarn Main.java >build.log 2>&1 || { cat build.log >&2; exit 1; }; "
               "exec java -Xmx256m -XX:+UseSerialGC -cp . Main")
_GO_BUILD = "go build -o prog main.go >build.log 2>&1 || { cat build.log >&2; exit 1; }; exec ./prog"

LANGUAGES: dict[str, Language] = {
    lang.name: lang
    for lang in (
        Language("perl", "low", "main.pl", ("perl", "main.pl"), "perl", "perl", ("subroutine_declaration_statement",),
                 ("use_statement",), r"^\s*sub\s+{name}\b", "mxeval/mbxp/mbplp_release_v1.jsonl",
                 "mxeval/multi_humaneval/HumanEval_perl_v1.1.jsonl", "humaneval_xl/perl/English.jsonl",
                 reads=("/etc/perl",)),
        Language("go", "low", "main.go", ("sh", "-c", _GO_BUILD), "go", "go", ("function_declaration",),
                 ("import_declaration",), r"^\s*func\s+{name}\s*\(", "mxeval/mbxp/mbgp_release_v1.1.jsonl",
                 "mxeval/multi_humaneval/HumanEval_go_v1.jsonl", "humaneval_xl/go/English.jsonl",
                 compile_s=15.0, memory_mb=2048),
        Language("swift", "low", "main.swift", ("swift", "main.swift"), "swift", "swift", ("function_declaration",),
                 ("import_declaration",), r"^\s*func\s+{name}\s*\(", "mxeval/mbxp/mbswp_release_v1.jsonl",
                 "mxeval/multi_humaneval/HumanEval_swift_v1.1.jsonl", "humaneval_xl/swift/English.jsonl",
                 compile_s=15.0, memory_mb=2048),
        Language("ruby", "low", "main.rb", ("ruby", "main.rb"), "ruby", "ruby", ("method",), (),
                 r"^\s*def\s+{name}\b", "mxeval/mbxp/mbrbp_release_v1.2.jsonl",
                 "mxeval/multi_humaneval/HumanEval_ruby_v1.1.jsonl", "humaneval_xl/ruby/English.jsonl"),
        Language("php", "low", "main.php", ("php", "main.php"), "php", "php", ("function_definition",), (),
                 r"^\s*function\s+{name}\s*\(", "mxeval/mbxp/mbphp_release_v1.2.jsonl",
                 "mxeval/multi_humaneval/HumanEval_php_v1.1.jsonl", "humaneval_xl/php/English.jsonl",
                 reads=("/etc/php",)),
        Language("python", "high", "main.py", ("python3", "main.py"), "python3", "python", ("function_definition",),
                 ("import_statement", "import_from_statement"), r"^\s*def\s+{name}\s*\(",
                 "mxeval/mbxp/mbpp_release_v1.jsonl", "mxeval/multi_humaneval/HumanEval.jsonl",
                 "humaneval_xl/python/English.jsonl"),
        Language("javascript", "high", "main.js", ("node", "main.js"), "node", "javascript", ("function_declaration",),
                 (), r"^\s*(async\s+)?function\s+{name}\s*\(", "mxeval/mbxp/mbjsp_release_v1.2.jsonl",
                 "mxeval/multi_humaneval/HumanEval_javascript_v1.1.jsonl", "humaneval_xl/javascript/English.jsonl",
                 env={"NODE_PATH": "/usr/share/nodejs:/usr/lib/node_modules"}),  # lodash (Debian node-lodash)
        Language("java", "high", "Main.java", ("sh", "-c", _JAVA_BUILD), "javac", "java", ("method_declaration",),
                 ("import_declaration",), r"^\s*(?:(?:public|private|protected|static|final)\s+)*[\w<>\[\],.? ]+\s+{name}\s*\(",
                 "mxeval/mbxp/mbjp_release_v1.2.jsonl", "mxeval/multi_humaneval/HumanEval_java_v1.1.jsonl",
                 "humaneval_xl/java/English.jsonl", compile_s=15.0, memory_mb=4096, closing="}\n",
                 reads=("/etc/java-*-openjdk",)),  # the JDK's conf/ and security files link here
    )
}


@cache
def _parser(grammar: str):
    from tree_sitter_language_pack import get_parser

    return get_parser(grammar)


def code_block(text: str, language: Language) -> str:
    """The answer's code: its first fenced block (the one tagged with the language if any), else the text."""
    blocks = FENCE.findall(text)
    if not blocks:
        return text
    tagged = [code for tag, code in blocks if tag.lower() in (language.name, language.grammar, "golang", "js", "py")]
    return (tagged or [code for _, code in blocks])[0]


def _walk(node):
    yield node
    for child in node.children:
        yield from _walk(child)


def _name(node) -> str:
    name = node.child_by_field_name("name")
    return name.text.decode(errors="replace") if name is not None else ""


def top_level_parts(language: Language, code: str) -> tuple[list[str], list[str], list[str]]:
    """(imports, functions, their names) an answer defines; for Java the methods of its classes."""
    tree = _parser(language.grammar).parse(code.encode())
    imports, functions, names = [], [], []
    for node in tree.root_node.children:
        candidates = [node]
        if language.name == "java" and node.type == "class_declaration":
            body = node.child_by_field_name("body")
            candidates = list(body.children) if body is not None else []
        for part in candidates:
            if part.type in language.function_types and _name(part) not in ("main", ""):
                functions.append(part.text.decode(errors="replace"))
                names.append(_name(part))
            elif part.type in language.import_types:
                imports.append(part.text.decode(errors="replace"))
    return imports, functions, names


def signature_start(language: Language, prompt: str, entry_point: str) -> int | None:
    """Offset in the prompt where the entry point's definition begins."""
    pattern = re.compile(language.signature.format(name=re.escape(entry_point)), re.MULTILINE)
    match = pattern.search(prompt)
    return match.start() if match else None


def assemble(language: Language, problem: dict, answer: str) -> tuple[str, str]:
    """(the code under test, the program to run): the prompt's header and the answer's
    functions, then the problem's test code."""
    code = code_block(answer, language)
    prompt, test, entry = problem["prompt"], problem["test"], problem["entry_point"]
    imports, functions, names = top_level_parts(language, code)
    start = signature_start(language, prompt, entry)
    if entry in names and start is not None:
        header = prompt[:start]
        missing = [line for line in imports if line.strip() not in header]
        if missing:
            header = _add_imports(language, header, missing)
        body = header + "\n\n".join(functions) + "\n" + language.closing
    else:  # a continuation of the prompt's open function, as mxeval scores completions
        body = prompt + code
    program = body + "\n" + test
    if language.name == "python":
        program += f"\ncheck({entry})\n"
    return body, program


def _add_imports(language: Language, header: str, imports: Sequence[str]) -> str:
    block = "\n".join(imports) + "\n"
    if language.name == "go":  # imports go after the package clause
        package = re.search(r"^package\s+\w+\s*\n", header, re.MULTILINE)
        if package:
            return header[: package.end()] + block + header[package.end() :]
    if language.name == "php" and header.lstrip().startswith("<?php"):
        return header
    return block + header


def syntax_errors(language: Language, program: str, limit: int = 3) -> list[str]:
    """tree-sitter's ERROR and MISSING nodes, as 'line N: ...' (empty: parses cleanly)."""
    tree = _parser(language.grammar).parse(program.encode())
    if not tree.root_node.has_error:
        return []
    found = []
    for node in _walk(tree.root_node):
        if node.type == "ERROR" or node.is_missing:
            line = node.start_point[0] + 1
            what = f"missing {node.type}" if node.is_missing else f"unexpected '{node.text.decode(errors='replace')[:40]}'"
            found.append(f"line {line}: {what}")
            if len(found) >= limit:
                break
    return found


def limits(language: Language, timeout_s: float) -> Limits:
    wall = timeout_s + language.compile_s
    return Limits(wall_s=wall, cpu_s=int(wall) + 5, memory_mb=language.memory_mb, processes=64)


def run_program(language: Language, program: str, timeout_s: float = 5.0) -> Execution:
    """Run one program in the sandbox (``harness/sandbox.py``)."""
    return execute(list(language.command), {language.filename: program}, limits(language, timeout_s), env=language.env,
                   reads=language.reads)
