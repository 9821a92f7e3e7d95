"""Overload test: nlp-serve far past its capacity, then back to normal.

1. Capacity: a closed loop of a few clients for a while gives completions/s.
2. Overload: many more clients than the queues hold, for DURATION seconds:
   offered load is several times the capacity (every 429 is answered at once,
   so its client asks again at once).
3. Recovery: one client again; its latency must be back at the unloaded value.

Checks: every answer is 200 or 429 (no error, no timeout), the p99 latency of
accepted requests stays bounded, resident memory after the run is close to
before, and recovery is immediate. Writes overload.json and overload.md.

    python bench/overload.py --out build/overload --duration 10      # bounded (make test)
    python bench/overload.py --out bench/results --duration 60       # full (make overload)
"""

import argparse
import http.client
import json
import pathlib
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from run import ROOT, Server, free_port, percentile  # noqa: E402

BODY = json.dumps({"prompt": "Under load the service", "max_new_tokens": 32,
                   "min_new_tokens": 32, "temperature": 0.7}).encode()


def rss_mb(pid):
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024


def closed_loop(port, clients, seconds, timeout):
    """`clients` threads each sending requests back to back; returns (status, latency) or errors."""
    results, errors, lock = [], [], threading.Lock()
    stop = time.time() + seconds

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        while time.time() < stop:
            started = time.time()
            try:
                connection.request("POST", "/complete", BODY, {"content-type": "application/json"})
                response = connection.getresponse()
                response.read()
                with lock:
                    results.append((response.status, time.time() - started))
            except Exception as error:  # timeouts and resets count as failures
                with lock:
                    errors.append(repr(error))
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def summary(results, errors, seconds):
    accepted = [latency for status, latency in results if status == 200]
    shed = [latency for status, latency in results if status == 429]
    statuses = {}
    for status, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "requests": len(results) + len(errors), "errors": len(errors), "statuses": statuses,
        "offered_per_s": round((len(results) + len(errors)) / seconds, 1),
        "accepted_per_s": round(len(accepted) / seconds, 2),
        "accepted_p50_ms": round(percentile(accepted, 0.5) * 1000, 1) if accepted else None,
        "accepted_p99_ms": round(percentile(accepted, 0.99) * 1000, 1) if accepted else None,
        "shed_p99_ms": round(percentile(shed, 0.99) * 1000, 1) if shed else None,
        "error_examples": errors[:3],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--binary", type=pathlib.Path, default=ROOT / "target/release/nlp-serve")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = Server("overload-nlp-serve", [str(args.binary), "--profile", "tiny"],
                    {"PORT": str(port), "NLP_SERVE__SERVER__HOST": "127.0.0.1",
                     "NLP_SERVE__LOGGING__LEVEL": "error",
                     "NLP_SERVE__COMPLETION__QUEUE_SIZE": "16",
                     "NLP_SERVE__COMPLETION__MAX_BATCH_SIZE": "8"}, port, args.out)
    report = {}
    try:
        server.wait_ready("/ready")
        closed_loop(port, 2, 2, 30)  # warm-up
        report["memory_before_mb"] = round(rss_mb(server.process.pid), 1)
        capacity_seconds = max(3.0, args.duration / 6)
        results, errors = closed_loop(port, 4, capacity_seconds, 30)
        report["capacity"] = summary(results, errors, capacity_seconds)
        unloaded, _ = closed_loop(port, 1, 2, 30)
        report["unloaded_p50_ms"] = round(percentile([l for _, l in unloaded], 0.5) * 1000, 1)

        peak = [0.0]
        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                peak[0] = max(peak[0], rss_mb(server.process.pid))
                time.sleep(0.25)
        sampler = threading.Thread(target=sample)
        sampler.start()
        results, errors = closed_loop(port, args.clients, args.duration, 30)
        sampling.set()
        sampler.join()
        report["overload"] = summary(results, errors, args.duration)
        report["overload"]["clients"] = args.clients
        report["overload"]["offered_over_capacity"] = round(
            report["overload"]["offered_per_s"] / max(report["capacity"]["accepted_per_s"], 0.01), 1)
        report["memory_peak_mb"] = round(peak[0], 1)

        recovered_at = time.time()
        results, errors = closed_loop(port, 1, 2, 30)
        report["recovery"] = summary(results, errors, 2)
        report["recovery"]["first_answer_after_ms"] = round(results[0][1] * 1000, 1) if results else None
        report["memory_after_mb"] = round(rss_mb(server.process.pid), 1)
        del recovered_at
    finally:
        server.stop()

    overload = report["overload"]
    failures = []
    if overload["errors"] or set(overload["statuses"]) - {"200", "429"}:
        failures.append(f"answers other than 200/429: {overload['statuses']}, errors {overload['errors']}")
    if "429" not in overload["statuses"]:
        failures.append("the overload never got a 429: not overloaded")
    bound_ms = 20 * report["unloaded_p50_ms"] + 2000
    if overload["accepted_p99_ms"] is None or overload["accepted_p99_ms"] > bound_ms:
        failures.append(f"accepted p99 {overload['accepted_p99_ms']} ms above {bound_ms} ms")
    if report["recovery"]["statuses"] != {"200": len(results)} or report["recovery"]["errors"]:
        failures.append(f"recovery answered {report['recovery']['statuses']}")
    if report["recovery"]["accepted_p50_ms"] > 3 * report["unloaded_p50_ms"] + 50:
        failures.append("latency after the overload is not back to normal")
    if report["memory_after_mb"] > report["memory_before_mb"] + 150:
        failures.append("resident memory grew by more than 150 MB")
    report["failures"] = failures
    (args.out / "overload.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Overload test ({args.duration:.0f} s, tiny models, loopback)", "",
        f"Capacity (4 clients back to back): {report['capacity']['accepted_per_s']} completions/s "
        f"(32 new tokens each); unloaded p50 {report['unloaded_p50_ms']} ms.", "",
        f"Overload: {args.clients} clients for {args.duration:.0f} s, offering {overload['offered_per_s']} requests/s "
        f"({overload['offered_over_capacity']}x capacity); queue 16, batch 8.", "",
        "| measure | value |", "|---|---|",
        f"| requests sent | {overload['requests']} |",
        f"| statuses | {', '.join(f'{k}: {v}' for k, v in sorted(overload['statuses'].items()))} |",
        f"| errors / timeouts | {overload['errors']} |",
        f"| accepted per second | {overload['accepted_per_s']} |",
        f"| accepted p50 / p99 | {overload['accepted_p50_ms']} / {overload['accepted_p99_ms']} ms |",
        f"| 429 p99 | {overload['shed_p99_ms']} ms |",
        f"| resident memory before / peak / after | {report['memory_before_mb']} / {report['memory_peak_mb']} / {report['memory_after_mb']} MB |",
        f"| recovery: first answer, p50 | {report['recovery']['first_answer_after_ms']} ms, {report['recovery']['accepted_p50_ms']} ms |",
        "", "Result: " + ("passed" if not failures else "FAILED: " + "; ".join(failures)), "",
        "The load generator (Python threads) shares the machine's cores with the server.",
    ]
    (args.out / "overload.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
