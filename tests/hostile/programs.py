"""Hostile programs per language family, for the sandbox tests.

Each program *succeeds* (exit 0, nothing on stderr) only if its attack worked, so a safe
sandbox gives every one of them a fail verdict. Placeholders filled by the test:
``{marker}`` a path outside the run directory to write to, ``{harness_pid}`` the harness's
pid, ``{secret}`` a value only the harness's environment holds.
"""

from __future__ import annotations

BEHAVIOURS = ("infinite_loop", "fork_bomb", "memory_hog", "huge_output", "write_elsewhere", "network",
              "read_environment", "kill_parent")

PYTHON = {
    "infinite_loop": "while True:\n    pass\n",
    "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "memory_hog": "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 28))\n",
    "huge_output": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
    "write_elsewhere": "open('{marker}', 'w').write('escaped')\n",
    "network": "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2).close()\n",
    "read_environment": (
        "import os, glob\nfound = '{secret}' in str(os.environ)\n"
        "for path in glob.glob('/proc/*/environ'):\n    try:\n        found |= '{secret}' in open(path, errors='replace').read()\n"
        "    except OSError:\n        pass\nraise SystemExit(0 if found else 1)\n"
    ),
    "kill_parent": (
        "import os, signal\nfor pid in ({harness_pid}, os.getppid()):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
        "    except OSError:\n        pass\nraise SystemExit(1)\n"
    ),
}

PERL = {
    "infinite_loop": "1 while 1;\n",
    "fork_bomb": "while (1) { fork; }\n",
    "memory_hog": "my @a; while (1) { push @a, 'x' x (1 << 28); }\n",
    "huge_output": "$| = 1; while (1) { print 'x' x 65536; }\n",
    "write_elsewhere": "open(my $f, '>', '{marker}') or exit 1; print $f 'escaped'; close $f; exit 0;\n",
    "network": "use IO::Socket::INET; my $s = IO::Socket::INET->new(PeerAddr => '1.1.1.1', PeerPort => 80, Timeout => 2) or exit 1; exit 0;\n",
    "read_environment": "exit((join(' ', %ENV) =~ /{secret}/) ? 0 : 1);\n",
    "kill_parent": "kill 'KILL', {harness_pid}, getppid(); exit 1;\n",
}

JAVASCRIPT = {
    "infinite_loop": "while (true) {}\n",
    "fork_bomb": "const { spawn } = require('child_process');\nwhile (true) { try { spawn(process.execPath, [__filename], { detached: true }); } catch (e) {} }\n",
    "memory_hog": "const a = [];\nwhile (true) { a.push(Buffer.alloc(1 << 28, 1)); }\n",
    "huge_output": "const s = 'x'.repeat(65536);\nfunction go() { while (process.stdout.write(s)) {} process.stdout.once('drain', go); }\ngo();\n",
    "write_elsewhere": "require('fs').writeFileSync('{marker}', 'escaped');\n",
    "network": "const s = require('net').connect(80, '1.1.1.1', () => process.exit(0));\ns.on('error', () => process.exit(1));\nsetTimeout(() => process.exit(1), 2000);\n",
    "read_environment": "process.exit(JSON.stringify(process.env).includes('{secret}') ? 0 : 1);\n",
    "kill_parent": "for (const pid of [{harness_pid}, process.ppid]) { try { process.kill(pid, 'SIGKILL'); } catch (e) {} }\nprocess.exit(1);\n",
}

SHELL = {
    "infinite_loop": "while :; do :; done\n",
    "fork_bomb": "b() { b | b & }; b; while :; do sleep 1; done\n",
    "memory_hog": "x=a; while :; do x=$x$x; done\n",
    "huge_output": "yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n",
    "write_elsewhere": "echo escaped > '{marker}' 2>/dev/null && exit 0; exit 1\n",
    "network": "exec 3<>/dev/tcp/1.1.1.1/80 2>/dev/null && exit 0; exit 1\n",
    "read_environment": "env | grep -q '{secret}' && exit 0; cat /proc/*/environ 2>/dev/null | grep -q '{secret}' && exit 0; exit 1\n",
    "kill_parent": "kill -9 {harness_pid} $PPID 2>/dev/null; kill -9 -1 2>/dev/null; exit 1\n",
}

RUBY = {
    "infinite_loop": "loop {}\n",
    "fork_bomb": "loop { fork rescue nil }\n",
    "memory_hog": "a = []\nloop { a << ('x' * (1 << 28)) }\n",
    "huge_output": "$stdout.sync = true\nloop { print 'x' * 65536 }\n",
    "write_elsewhere": "File.write('{marker}', 'escaped')\n",
    "network": "require 'socket'\nSocket.tcp('1.1.1.1', 80, connect_timeout: 2).close\n",
    "read_environment": "exit(ENV.to_h.to_s.include?('{secret}') ? 0 : 1)\n",
    "kill_parent": "[{harness_pid}, Process.ppid].each { |p| Process.kill('KILL', p) rescue nil }\nexit 1\n",
}

PHP = {
    "infinite_loop": "<?php while (true) {}\n",
    "fork_bomb": "<?php while (true) { if (function_exists('pcntl_fork')) { pcntl_fork(); } else { proc_open('php ' . __FILE__, [], $p); } }\n",
    "memory_hog": "<?php ini_set('memory_limit', '-1'); $a = []; while (true) { $a[] = str_repeat('x', 1 << 28); }\n",
    "huge_output": "<?php while (true) { echo str_repeat('x', 65536); }\n",
    "write_elsewhere": "<?php exit(@file_put_contents('{marker}', 'escaped') === false ? 1 : 0);\n",
    "network": "<?php $s = @fsockopen('1.1.1.1', 80, $e, $m, 2); exit($s ? 0 : 1);\n",
    "read_environment": "<?php exit(strpos(json_encode(getenv()), '{secret}') !== false ? 0 : 1);\n",
    "kill_parent": "<?php if (function_exists('posix_kill')) { posix_kill({harness_pid}, 9); posix_kill(posix_getppid(), 9); } exit(1);\n",
}

GO = {
    "infinite_loop": "package main\nfunc main() { for {} }\n",
    "memory_hog": "package main\nfunc main() { var a [][]byte; for { a = append(a, make([]byte, 1<<28)); a[len(a)-1][0] = 1 } }\n",
    "write_elsewhere": "package main\nimport \"os\"\nfunc main() { if os.WriteFile(\"{marker}\", []byte(\"escaped\"), 0644) != nil { os.Exit(1) } }\n",
    "network": "package main\nimport (\"net\"; \"os\"; \"time\")\nfunc main() { c, err := net.DialTimeout(\"tcp\", \"1.1.1.1:80\", 2*time.Second); if err != nil { os.Exit(1) }; c.Close() }\n",
    "read_environment": "package main\nimport (\"os\"; \"strings\")\nfunc main() { if !strings.Contains(strings.Join(os.Environ(), \" \"), \"{secret}\") { os.Exit(1) } }\n",
    "kill_parent": "package main\nimport (\"os\"; \"syscall\")\nfunc main() { syscall.Kill({harness_pid}, syscall.SIGKILL); syscall.Kill(os.Getppid(), syscall.SIGKILL); os.Exit(1) }\n",
}

JAVA = {
    "infinite_loop": "public class Main { public static void main(String[] a) { while (true) {} } }\n",
    "memory_hog": "import java.util.*;\npublic class Main { public static void main(String[] a) { List<byte[]> l = new ArrayList<>(); while (true) l.add(new byte[1 << 28]); } }\n",
    "write_elsewhere": "import java.nio.file.*;\npublic class Main { public static void main(String[] a) throws Exception { Files.writeString(Path.of(\"{marker}\"), \"escaped\"); } }\n",
    "network": "import java.net.*;\npublic class Main { public static void main(String[] a) throws Exception { new Socket().connect(new InetSocketAddress(\"1.1.1.1\", 80), 2000); } }\n",
    "read_environment": "public class Main { public static void main(String[] a) { System.exit(System.getenv().toString().contains(\"{secret}\") ? 0 : 1); } }\n",
    "kill_parent": "public class Main { public static void main(String[] a) throws Exception { new ProcessBuilder(\"kill\", \"-9\", \"{harness_pid}\").start().waitFor(); System.exit(1); } }\n",
}

# family -> (file name, command, programs, wall seconds: compiled languages build first)
FAMILIES = {
    "python": ("main.py", ["python3", "main.py"], PYTHON, 3.0),
    "perl": ("main.pl", ["perl", "main.pl"], PERL, 3.0),
    "javascript": ("main.js", ["node", "main.js"], JAVASCRIPT, 3.0),
    "shell": ("main.sh", ["bash", "main.sh"], SHELL, 3.0),
    "ruby": ("main.rb", ["ruby", "main.rb"], RUBY, 3.0),
    "php": ("main.php", ["php", "main.php"], PHP, 3.0),
    "go": ("main.go", ["sh", "-c", "go build -o prog main.go && ./prog"], GO, 20.0),
    "java": ("Main.java", ["java", "-Xmx256m", "-XX:+UseSerialGC", "Main.java"], JAVA, 12.0),
}

# A harmless program per family that must pass: shows each toolchain works in the sandbox,
# so the hostile programs fail for their attack, not for a broken toolchain.
BENIGN = {
    "python": "print('hello')\n",
    "perl": "print \"hello\\n\";\n",
    "javascript": "console.log('hello');\n",
    "shell": "echo hello\n",
    "ruby": "puts 'hello'\n",
    "php": "<?php echo \"hello\\n\";\n",
    "go": "package main\nimport \"fmt\"\nfunc main() { fmt.Println(\"hello\") }\n",
    "java": "public class Main { public static void main(String[] a) { System.out.println(\"hello\"); } }\n",
}

# One program per family that looks for the host's files: it reads ``{planted}`` (paths,
# comma-separated, of world-readable files holding ``{secret}``, planted by the test in the
# checkout, $HOME and /tmp), the harness's /proc entries and every visible process's environ
# and cmdline, the files behind inherited descriptors (/dev/fd), and the planted paths again
# through a symlink and a hard link made in its own directory; Python also tries ptrace and
# process_vm_readv on the harness. It prints what it finds and succeeds when it found
# anything, so a sandbox that hides the host gives it a fail verdict and no secret in its
# output.
SNOOP = {
    "python": r'''import ctypes, glob, os
found = []
planted = "{planted}".split(",")
paths = planted + ["/proc/{harness_pid}/environ", "/proc/{harness_pid}/cmdline"]
paths += glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline")
for n in range(3, 32):
    try:
        target = os.readlink(f"/dev/fd/{n}")
        if target.startswith("/") and not target.startswith(os.getcwd()):  # not its own source
            paths.append(f"/dev/fd/{n}")
    except OSError:
        pass
for path in paths:
    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 20).decode("latin-1")
    except OSError:
        continue
    if "{secret}" in data or "pytest" in data:
        found.append(path)
        print(data)
for i, path in enumerate(planted):
    try:
        os.symlink(path, f"link{i}")
        data = open(f"link{i}", encoding="latin-1").read()
        if "{secret}" in data:
            found.append("symlink")
            print(data)
    except OSError:
        pass
    try:
        os.link(path, f"hard{i}")
        found.append("hardlink")
    except OSError:
        pass
if os.path.exists("/proc/{harness_pid}"):
    found.append("harness in /proc")
libc = ctypes.CDLL(None, use_errno=True)
if libc.ptrace(16, {harness_pid}, None, None) == 0:  # PTRACE_ATTACH
    found.append("ptrace")
class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]
buffer = ctypes.create_string_buffer(4096)
local, remote = Iovec(ctypes.cast(buffer, ctypes.c_void_p), 4096), Iovec(0x400000, 4096)
if libc.process_vm_readv({harness_pid}, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) > 0:
    found.append("process_vm_readv")
print(",".join(found))
raise SystemExit(0 if found else 1)
''',
    "perl": r'''my @found;
my @planted = split /,/, '{planted}';
my @paths = (@planted, '/proc/{harness_pid}/environ', '/proc/{harness_pid}/cmdline', glob('/proc/[0-9]*/environ'), glob('/proc/[0-9]*/cmdline'));
use Cwd;
my $cwd = getcwd();
for my $n (3 .. 31) { my $t = readlink("/dev/fd/$n"); push @paths, "/dev/fd/$n" if defined $t && $t =~ m{^/} && index($t, $cwd) != 0; }
for my $p (@paths) {
    open(my $f, '<', $p) or next;
    read($f, my $d, 1 << 20);
    $d //= '';
    if (index($d, '{secret}') >= 0 || index($d, 'pytest') >= 0) { push @found, $p; print "$d\n"; }
}
for my $i (0 .. $#planted) {
    if (symlink($planted[$i], "link$i") && open(my $f, '<', "link$i")) {
        local $/; my $d = <$f> // '';
        if (index($d, '{secret}') >= 0) { push @found, 'symlink'; print "$d\n"; }
    }
    push @found, 'hardlink' if link($planted[$i], "hard$i");
}
push @found, 'harness in /proc' if -e '/proc/{harness_pid}';
print join(',', @found), "\n";
exit(@found ? 0 : 1);
''',
    "javascript": r'''const fs = require('fs');
const found = [];
const planted = '{planted}'.split(',');
const list = d => { try { return fs.readdirSync(d); } catch (e) { return []; } };
const paths = [...planted, '/proc/{harness_pid}/environ', '/proc/{harness_pid}/cmdline'];
for (const n of list('/proc').filter(n => /^\d+$/.test(n))) paths.push(`/proc/${n}/environ`, `/proc/${n}/cmdline`);
for (let n = 3; n < 32; n++) { try { const t = fs.readlinkSync(`/dev/fd/${n}`); if (t.startsWith('/') && !t.startsWith(process.cwd())) paths.push(`/dev/fd/${n}`); } catch (e) {} }
for (const p of paths) {
  let d;
  try { d = fs.readFileSync(p, 'latin1'); } catch (e) { continue; }
  if (d.includes('{secret}') || d.includes('pytest')) { found.push(p); console.log(d); }
}
planted.forEach((p, i) => {
  try { fs.symlinkSync(p, `link${i}`); const d = fs.readFileSync(`link${i}`, 'latin1'); if (d.includes('{secret}')) { found.push('symlink'); console.log(d); } } catch (e) {}
  try { fs.linkSync(p, `hard${i}`); found.push('hardlink'); } catch (e) {}
});
if (fs.existsSync('/proc/{harness_pid}')) found.push('harness in /proc');
console.log(found.join(','));
process.exit(found.length ? 0 : 1);
''',
    "shell": r'''found=""
IFS=, read -ra planted <<< '{planted}'
for p in "${planted[@]}" /proc/{harness_pid}/environ /proc/{harness_pid}/cmdline /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do
  d=$(tr '\0' ' ' 2>/dev/null < "$p") || continue
  case "$d" in *{secret}*|*pytest*) found="$found $p"; echo "$d";; esac
done
for n in $(seq 3 31); do
  t=$(readlink /dev/fd/$n 2>/dev/null) || continue
  case "$t" in "$PWD"/*) ;; /*) d=$(head -c 1048576 /dev/fd/$n 2>/dev/null); case "$d" in *{secret}*) found="$found fd$n"; echo "$d";; esac;; esac
done
i=0
for p in "${planted[@]}"; do
  i=$((i + 1))
  if ln -s "$p" link$i 2>/dev/null; then d=$(cat link$i 2>/dev/null); case "$d" in *{secret}*) found="$found symlink"; echo "$d";; esac; fi
  ln "$p" hard$i 2>/dev/null && found="$found hardlink"
done
[ -e /proc/{harness_pid} ] && found="$found harness-in-proc"
echo "$found"
[ -n "$found" ] && exit 0
exit 1
''',
    "ruby": r'''found = []
planted = '{planted}'.split(',')
paths = planted + ['/proc/{harness_pid}/environ', '/proc/{harness_pid}/cmdline'] + Dir.glob('/proc/[0-9]*/environ') + Dir.glob('/proc/[0-9]*/cmdline')
(3..31).each { |n| begin; t = File.readlink("/dev/fd/#{n}"); paths << "/dev/fd/#{n}" if t.start_with?('/') && !t.start_with?(Dir.pwd); rescue SystemCallError; end }
paths.each do |p|
  d = begin; File.binread(p, 1 << 20) || ''; rescue SystemCallError, IOError; next; end
  if d.include?('{secret}') || d.include?('pytest') then found << p; puts d end
end
planted.each_with_index do |p, i|
  begin; File.symlink(p, "link#{i}"); d = File.binread("link#{i}"); (found << 'symlink'; puts d) if d.include?('{secret}'); rescue SystemCallError; end
  begin; File.link(p, "hard#{i}"); found << 'hardlink'; rescue SystemCallError; end
end
found << 'harness in /proc' if File.exist?('/proc/{harness_pid}')
puts found.join(',')
exit(found.empty? ? 1 : 0)
''',
    "php": r'''<?php
$found = [];
$planted = explode(',', '{planted}');
$paths = array_merge($planted, ['/proc/{harness_pid}/environ', '/proc/{harness_pid}/cmdline'], glob('/proc/[0-9]*/environ') ?: [], glob('/proc/[0-9]*/cmdline') ?: []);
for ($n = 3; $n < 32; $n++) { $t = @readlink("/dev/fd/$n"); if ($t !== false && substr($t, 0, 1) === '/' && strpos($t, getcwd()) !== 0) $paths[] = "/dev/fd/$n"; }
foreach ($paths as $p) {
    $d = @file_get_contents($p, false, null, 0, 1 << 20);
    if ($d !== false && (strpos($d, '{secret}') !== false || strpos($d, 'pytest') !== false)) { $found[] = $p; echo $d, "\n"; }
}
foreach ($planted as $i => $p) {
    if (@symlink($p, "link$i")) { $d = @file_get_contents("link$i"); if ($d !== false && strpos($d, '{secret}') !== false) { $found[] = 'symlink'; echo $d, "\n"; } }
    if (@link($p, "hard$i")) $found[] = 'hardlink';
}
if (file_exists('/proc/{harness_pid}')) $found[] = 'harness in /proc';
echo implode(',', $found), "\n";
exit($found ? 0 : 1);
''',
    "go": r'''package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

func read(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	d, err := io.ReadAll(io.LimitReader(f, 1<<20))
	return string(d), err
}

func main() {
	found := []string{}
	cwd, _ := os.Getwd()
	planted := strings.Split("{planted}", ",")
	paths := append([]string{}, planted...)
	paths = append(paths, "/proc/{harness_pid}/environ", "/proc/{harness_pid}/cmdline")
	environs, _ := filepath.Glob("/proc/[0-9]*/environ")
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	paths = append(append(paths, environs...), cmdlines...)
	for n := 3; n < 32; n++ {
		p := fmt.Sprintf("/dev/fd/%d", n)
		if t, err := os.Readlink(p); err == nil && strings.HasPrefix(t, "/") && !strings.HasPrefix(t, cwd) {
			paths = append(paths, p)
		}
	}
	for _, p := range paths {
		if d, err := read(p); err == nil && (strings.Contains(d, "{secret}") || strings.Contains(d, "pytest")) {
			found = append(found, p)
			fmt.Println(d)
		}
	}
	for i, p := range planted {
		link := fmt.Sprintf("link%d", i)
		if os.Symlink(p, link) == nil {
			if d, err := read(link); err == nil && strings.Contains(d, "{secret}") {
				found = append(found, "symlink")
				fmt.Println(d)
			}
		}
		if os.Link(p, fmt.Sprintf("hard%d", i)) == nil {
			found = append(found, "hardlink")
		}
	}
	if _, err := os.Stat("/proc/{harness_pid}"); err == nil {
		found = append(found, "harness in /proc")
	}
	fmt.Println(strings.Join(found, ","))
	if len(found) == 0 {
		os.Exit(1)
	}
}
''',
    "java": r'''import java.io.InputStream;
import java.nio.file.*;
import java.util.*;

public class Main {
    static String read(Path p) throws Exception {
        try (InputStream in = Files.newInputStream(p)) { return new String(in.readNBytes(1 << 20), "ISO-8859-1"); }
    }

    public static void main(String[] args) throws Exception {
        List<String> found = new ArrayList<>();
        String[] planted = "{planted}".split(",");
        List<String> paths = new ArrayList<>(Arrays.asList(planted));
        paths.add("/proc/{harness_pid}/environ");
        paths.add("/proc/{harness_pid}/cmdline");
        try (DirectoryStream<Path> procs = Files.newDirectoryStream(Paths.get("/proc"))) {
            for (Path p : procs) { if (p.getFileName().toString().matches("\\d+")) { paths.add(p + "/environ"); paths.add(p + "/cmdline"); } }
        } catch (Exception e) {}
        for (int n = 3; n < 32; n++) {
            try { String t = Files.readSymbolicLink(Paths.get("/dev/fd/" + n)).toString(); if (t.startsWith("/") && !t.startsWith(System.getProperty("user.dir"))) paths.add("/dev/fd/" + n); } catch (Exception e) {}
        }
        for (String p : paths) {
            try { String d = read(Paths.get(p)); if (d.contains("{secret}") || d.contains("pytest")) { found.add(p); System.out.println(d); } } catch (Exception e) {}
        }
        for (int i = 0; i < planted.length; i++) {
            try { Path link = Files.createSymbolicLink(Paths.get("link" + i), Paths.get(planted[i])); String d = read(link); if (d.contains("{secret}")) { found.add("symlink"); System.out.println(d); } } catch (Exception e) {}
            try { Files.createLink(Paths.get("hard" + i), Paths.get(planted[i])); found.add("hardlink"); } catch (Exception e) {}
        }
        if (Files.exists(Paths.get("/proc/{harness_pid}"))) found.add("harness in /proc");
        System.out.println(String.join(",", found));
        System.exit(found.isEmpty() ? 1 : 0);
    }
}
''',
}
