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
