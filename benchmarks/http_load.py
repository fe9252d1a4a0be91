"""Load benchmark: chunk-server beside nginx serving the same store as static files.

Not a timed test: ``python benchmarks/http_load.py [--duration S] [--connections N]``.
Both servers listen on 127.0.0.1 only. Before any timing, every chunk is fetched once from
each server and compared with the store's file; a wrong body ends the run (exit 1). Each
server then gets the same warm-up (wrk for a tenth of the time) and the measured run:
``wrk`` (Debian package ``wrk``) requests the store's 64 KiB chunks round-robin for a
bounded time, counting every response that is not 2xx. The script reports requests/s,
p50/p99 latency, non-2xx responses, socket errors, each server's CPU time per request
(its process and workers; on a shared machine a steadier figure than the rate), and
chunk-server's RSS, workers included (start, peak, end) as JSON; any non-2xx response or socket error makes the exit status 1.
Needs ``nginx`` (Debian ``nginx-light``) and ``wrk``: ``make bench-http-deps`` installs
both; without them the script exits with status 2 and says what is missing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from desync_ref.formats.chunk import compress, digest_function  # noqa: E402
from desync_ref.stores import Chunk  # noqa: E402
from desync_ref.stores.local import LocalStore  # noqa: E402

CHUNK_SIZE = 64 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def make_store(path: Path, count: int) -> list[str]:
    """``count`` chunks of 64 KiB (half random, half compressible); their request paths."""
    store = LocalStore(path, create=True)
    digest = digest_function("sha512-256")
    names = []
    for i in range(count):
        data = os.urandom(CHUNK_SIZE) if i % 2 else (os.urandom(256) * (CHUNK_SIZE // 256))
        cid = digest(data)
        store.store_chunk(Chunk(cid, data=data, compressed=compress(data)))
        names.append(f"/{cid.hex()[:4]}/{cid.hex()}.cacnk")
    return names


def wrk_script(path: Path, names: list[str]) -> None:
    """Round-robin over the chunk paths; every response that is not 2xx is counted."""
    listed = ",\n".join(f'  "{n}"' for n in names)
    path.write_text(f"""paths = {{
{listed}
}}
counter = 0
non2xx = 0
local threads = {{}}
setup = function(thread)
  table.insert(threads, thread)
end
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter % #paths) + 1])
end
response = function(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end
done = function(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("non2xx")
  end
  io.write(string.format("Responses not 2xx: %d\\n", total))
end
""")


def verify_bodies(port: int, names: list[str], store: Path, who: str) -> None:
    """GET every chunk once over one keep-alive connection; the body must be the file's."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for name in names:
            conn.request("GET", name)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200 or body != (store / name.lstrip("/")).read_bytes():
                raise SystemExit(f"{who}: GET {name} gave {response.status} and "
                                 f"{'a wrong' if response.status == 200 else 'no'} body")
    finally:
        conn.close()


def parse_wrk(text: str) -> dict[str, object]:
    def number(pattern: str) -> float | None:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else None

    def latency(label: str) -> float | None:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", text)
        if not m:
            return None
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    socket_errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        socket_errors = sum(int(x) for x in m.groups())
    non_2xx = number(r"Responses not 2xx: (\d+)")
    if non_2xx is None:
        raise SystemExit(f"wrk printed no count of non-2xx responses:\n{text}")
    return {"requests_per_s": number(r"Requests/sec:\s+([\d.]+)"), "p99_ms": latency("99%"),
            "p50_ms": latency("50%"), "non_2xx": int(non_2xx), "socket_errors": socket_errors,
            "requests": number(r"(\d+) requests in")}


def rss_kib(pid: int) -> int:
    """Resident set of the process and its workers (shared pages counted in each)."""
    total = 0
    for member in tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (chunk-server's workers, nginx's)."""
    found = [pid]
    for member in found:
        try:
            for task in Path(f"/proc/{member}/task").iterdir():
                found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of the process tree: the cost of the requests, which unlike
    the request rate hardly depends on what else runs on a shared machine."""
    user = system = 0
    for member in tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])  # utime, stime (fields 14 and 15)
        system += int(fields[12])
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


def measured(pid: int, url: str, script: Path, args: argparse.Namespace) -> dict[str, object]:
    """wrk's figures and the server's CPU milliseconds per request (and how much of it is
    user time: the interpreter's share; the system time is mostly the kernel's TCP and
    sendfile work, which nginx pays too)."""
    user0, system0 = cpu_seconds(pid)
    result = run_wrk(url, script, args)
    user1, system1 = cpu_seconds(pid)
    requests = result.get("requests")
    if isinstance(requests, float) and requests:
        result["server_cpu_ms_per_request"] = round(1000 * (user1 - user0 + system1 - system0) / requests, 4)
        result["server_user_ms_per_request"] = round(1000 * (user1 - user0) / requests, 4)
    return result


def run_wrk(url: str, script: Path, args: argparse.Namespace) -> dict[str, object]:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
           "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60)
    if out.returncode != 0:
        raise SystemExit(f"wrk failed: {out.stderr.strip()}")
    return parse_wrk(out.stdout)


def warm_up(url: str, script: Path, args: argparse.Namespace) -> None:
    """The same for both servers: wrk for a tenth of the measured time, results dropped."""
    run_wrk(url, script, argparse.Namespace(**{**vars(args), "duration": max(1, args.duration // 10)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per server")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunks", type=int, default=2000)
    args = parser.parse_args()
    missing = [package for tool, package in (("wrk", "wrk"), ("nginx", "nginx-light"))
               if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        print(f"http_load: cannot run, not installed: {', '.join(missing)} "
              f"(make bench-http-deps, or apt-get install {' '.join(missing)})", file=sys.stderr)
        return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory(prefix="http-load-") as tmp:
        work = Path(tmp)
        store = work / "store"
        names = make_store(store, args.chunks)
        script = work / "paths.lua"
        wrk_script(script, names)

        results: dict[str, object] = {"chunk_size": CHUNK_SIZE, "chunks": len(names),
                                      "duration_s": args.duration, "connections": args.connections,
                                      "cpus": os.cpu_count()}
        # nginx: the same directory as static files
        nport = free_port()
        user = "user root;" if os.geteuid() == 0 else ""  # workers must read the temp store
        (work / "nginx.conf").write_text(f"""
{user}
worker_processes auto;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  client_body_temp_path {work}/body;
  server {{ listen 127.0.0.1:{nport}; root {store}; }}
}}
""")
        ng = subprocess.Popen([nginx, "-c", str(work / "nginx.conf"), "-p", str(work)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(nport)
            verify_bodies(nport, names, store, "nginx")
            warm_up(f"http://127.0.0.1:{nport}", script, args)
            results["nginx"] = measured(ng.pid, f"http://127.0.0.1:{nport}", script, args)
        finally:
            ng.send_signal(signal.SIGQUIT)
            ng.wait(timeout=20)

        cport = free_port()
        cs = subprocess.Popen([sys.executable, "-m", "desync_ref", "chunk-server", "-s", str(store),
                               "-l", f"127.0.0.1:{cport}"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(cport)
            verify_bodies(cport, names, store, "chunk-server")
            start_rss = rss_kib(cs.pid)
            samples: list[int] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.5):
                    samples.append(rss_kib(cs.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            warm_up(f"http://127.0.0.1:{cport}", script, args)
            warm_rss = rss_kib(cs.pid)
            results["chunk_server"] = measured(cs.pid, f"http://127.0.0.1:{cport}", script, args)
            stop.set()
            sampler.join()
            results["chunk_server_rss_kib"] = {"start": start_rss, "after_warmup": warm_rss,
                                               "peak": max(samples or [0]), "end": rss_kib(cs.pid)}
        finally:
            cs.send_signal(signal.SIGTERM)
            cs.wait(timeout=20)
        ours, theirs = results["chunk_server"], results["nginx"]
        assert isinstance(ours, dict) and isinstance(theirs, dict)
        if ours.get("requests_per_s") and theirs.get("requests_per_s"):
            results["ratio_vs_nginx"] = round(float(ours["requests_per_s"]) / float(theirs["requests_per_s"]), 3)
        if ours.get("server_cpu_ms_per_request") and theirs.get("server_cpu_ms_per_request"):
            # nginx's CPU per request over ours: the rate ratio on cores of their own
            results["cpu_ratio_vs_nginx"] = round(float(theirs["server_cpu_ms_per_request"])
                                                  / float(ours["server_cpu_ms_per_request"]), 3)
    print(json.dumps(results, indent=2))
    failed = [f"{who}: {r['non_2xx']} responses not 2xx, {r['socket_errors']} socket errors"
              for who, r in (("nginx", theirs), ("chunk-server", ours))
              if r["non_2xx"] or r["socket_errors"]]
    for line in failed:
        print(f"http_load: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
