"""Benchmark harness: nlp-serve against the Python baseline, interleaved.

Starts both servers on the same models (bench/make_full_models.py), drives
each scenario with `hey` (a load generator from Debian), records latency
percentiles, throughput and peak resident memory, measures the machine's
memory bandwidth and matmul throughput, and writes summary.json, report.md
and a plot.

    python bench/run.py --models bench/models/full --out bench/results          # full run
    python bench/run.py --models bench/models/small --out build/bench-smoke --smoke
"""

import argparse
import csv
import datetime
import io
import json
import os
import pathlib
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "resources/documents/machine-learning.md"
TRANSLATION_NEW_TOKENS = 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server process on a port, with its peak memory readable from /proc."""

    def __init__(self, name, command, env, port, log_dir):
        self.name, self.port = name, port
        self.log = open(log_dir / f"{name}.log", "w")
        self.process = subprocess.Popen(command, env={**os.environ, **env}, cwd=ROOT,
                                        stdout=self.log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"

    def wait_ready(self, path, timeout=900):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see its log")
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as response:
                    if response.status == 200:
                        return
            except Exception:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {timeout}s")

    def reset_peak_memory(self):
        # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0).
        try:
            pathlib.Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        except OSError:
            pass

    def peak_memory_mb(self):
        status = pathlib.Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self):
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


def post(url, body, timeout=600):
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"{url}: HTTP {error.code}: {error.read().decode(errors='replace')}") from None


def hey(url, body, requests, concurrency):
    """Runs hey and returns per-request latencies (s), statuses and wall time."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(body, handle)
        body_file = handle.name
    started = time.time()
    output = subprocess.run(
        ["hey", "-n", str(requests), "-c", str(concurrency), "-m", "POST", "-T", "application/json",
         "-D", body_file, "-t", "600", "-disable-keepalive=false", "-o", "csv", url],
        capture_output=True, text=True, check=True).stdout
    wall = time.time() - started
    os.unlink(body_file)
    rows = list(csv.DictReader(io.StringIO(output)))
    latencies = [float(row["response-time"]) for row in rows]
    statuses = [int(row["status-code"]) for row in rows]
    ends = [float(row["offset"]) + float(row["response-time"]) for row in rows]
    elapsed = max(ends) if ends else wall
    return latencies, statuses, elapsed


def percentile(values, fraction):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def machine_limits(threads):
    """Memory bandwidth (copy) and fp32 matmul throughput with libtorch."""
    import torch
    torch.set_num_threads(threads)
    a = torch.ones(128 * 1024 * 1024 // 4 * 4, dtype=torch.float32)  # 512 MiB
    b = torch.empty_like(a)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        b.copy_(a)
        times.append(time.perf_counter() - start)
    bandwidth = 2 * a.numel() * 4 / min(times) / 1e9  # read + write
    n = 2048
    x, y = torch.randn(n, n), torch.randn(n, n)
    torch.mm(x, y)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        torch.mm(x, y)
        times.append(time.perf_counter() - start)
    gflops = 2 * n ** 3 / min(times) / 1e9
    del a, b
    return {"memory_bandwidth_gb_s": round(bandwidth, 2), "matmul_fp32_gflop_s": round(gflops, 1),
            "torch_version_for_microbenchmark": torch.__version__, "threads": threads}


def build_inputs(models):
    """Prompts and contexts of the token lengths the scenarios name."""
    from transformers import AutoTokenizer
    document = DOCUMENT.read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in document.split("\n\n") if p.strip() and not p.startswith("#")]
    gpt2 = AutoTokenizer.from_pretrained(models / "distilgpt2")
    ids = gpt2(" ".join(paragraphs))["input_ids"]
    prompt32 = gpt2.decode(ids[:32])
    prompt64 = gpt2.decode(ids[100:164])
    bert = AutoTokenizer.from_pretrained(models / "distilbert-squad")
    context = ""
    for paragraph in paragraphs[3:]:
        context = (context + "\n\n" + paragraph).strip()
        if len(bert(context)["input_ids"]) >= 300:
            break
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", " ".join(paragraphs)) if 20 <= len(s.split()) <= 30]
    sentence = sentences[0]
    paragraph10 = " ".join(sentences[1:11])
    return {
        "prompt32": prompt32, "prompt32_tokens": len(gpt2(prompt32)["input_ids"]),
        "prompt64": prompt64, "prompt64_tokens": len(gpt2(prompt64)["input_ids"]),
        "context": context, "context_tokens": len(bert(context)["input_ids"]),
        "document_tokens": len(bert(document)["input_ids"]),
        "sentence": sentence, "sentence_words": len(sentence.split()),
        "paragraph": paragraph10,
    }


def scenarios(inputs, smoke):
    scale = 0.02 if smoke else 1.0

    def n(count):
        return max(2, int(count * scale))

    question = "Who introduced support vector machines?"
    return [
        # name, path, body, [(concurrency, requests)], new tokens per request.
        # Completion scenarios also run on nlp-serve with fp16 and int8 weights.
        ("autocomplete", "/complete",
         {"prompt": inputs["prompt32"], "max_new_tokens": 8, "min_new_tokens": 8, "temperature": 0},
         [(1, n(60)), (16, n(160))], 8),
        ("playground", "/complete",
         {"prompt": inputs["prompt64"], "max_new_tokens": 128, "min_new_tokens": 128,
          "temperature": 0.8, "top_p": 0.9},
         [(1, n(8)), (4, n(12))], 128),
        ("qa_paragraph", "/qa", {"question": question, "context": inputs["context"]},
         [(1, n(60)), (16, n(160))], 0),
        ("qa_document", "/qa", {"question": question}, [(1, n(8))], 0),
        ("translate_sentence", "/translate", {"text": inputs["sentence"]},
         [(1, n(30)), (16, n(64))], TRANSLATION_NEW_TOKENS),
        ("translate_paragraph", "/translate", {"text": inputs["paragraph"]},
         [(1, n(8)), (16, n(32))], TRANSLATION_NEW_TOKENS * 10),
    ]


def write_service_config(path, models, threads, precision="fp32", completion_only=False):
    path.write_text(f"""# Generated by bench/run.py: nlp-serve on the benchmark models.
[server]
host = "127.0.0.1"
workers = {threads}
[logging]
level = "warn"
[runtime]
torch_threads = {threads}
[completion]
source = "{models / 'distilgpt2'}"
queue_size = 256
precision = "{precision}"
""" + ("""[qa]
enabled = false
[translation]
enabled = false
""" if completion_only else f"""[qa]
source = "{models / 'distilbert-squad'}"
queue_size = 256
[translation]
source = "{models / 'opus-mt-en-de'}"
queue_size = 256
num_beams = 4
min_output_tokens = {TRANSLATION_NEW_TOKENS + 1}
max_output_tokens = {TRANSLATION_NEW_TOKENS + 1}
"""))

# The reduced-precision variants of nlp-serve, run on the completion scenarios.
PRECISIONS = ("fp16", "int8")
COMPLETION_SCENARIOS = ("autocomplete", "playground")


def precision_report(binary, models, smoke):
    """Greedy agreement and logit drift of fp16/int8 against fp32 (src/bin/precision-report.rs)."""
    tool = binary.parent / "precision-report"
    prompts, tokens = ("4", "8") if smoke else ("24", "32")
    output = subprocess.run([str(tool), str(models / "distilgpt2"), str(DOCUMENT), prompts, tokens],
                            capture_output=True, text=True, check=True).stdout
    return json.loads(output)


def previous_results(path):
    """The nlp-serve rows of an earlier run, for the change table."""
    if not path.exists():
        return None
    previous = json.loads(path.read_text())
    return {"date": previous.get("date"),
            "results": [e for e in previous.get("results", []) if e["side"] == "nlp-serve"]}


def run(args):
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    logs.mkdir(exist_ok=True)
    models = args.models.resolve()
    config = args.out / "nlp-serve.toml"
    write_service_config(config, models, args.threads)
    previous = previous_results(args.previous or args.out / "summary.json")
    print("measuring the machine", flush=True)
    limits = machine_limits(args.threads)
    inputs = build_inputs(models)
    ours_port, base_port = free_port(), free_port()
    ours = Server("nlp-serve", [str(args.binary), "--config", str(config)],
                  {"PORT": str(ours_port)}, ours_port, logs)
    baseline = Server("baseline", [sys.executable, "-m", "uvicorn", "bench.baseline.server:app",
                                   "--host", "127.0.0.1", "--port", str(base_port), "--workers", "1",
                                   "--log-level", "warning"],
                      {"BASELINE_MODELS": str(models), "BASELINE_THREADS": str(args.threads),
                       "BASELINE_TRANSLATION_TOKENS": str(TRANSLATION_NEW_TOKENS),
                       "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"},
                      base_port, logs)
    variants = []
    for precision in PRECISIONS:
        variant_config = args.out / f"nlp-serve-{precision}.toml"
        write_service_config(variant_config, models, args.threads, precision, completion_only=True)
        port = free_port()
        variants.append(Server(f"nlp-serve {precision}", [str(args.binary), "--config", str(variant_config)],
                               {"PORT": str(port)}, port, logs))
    results = []
    try:
        ours.wait_ready("/ready")
        baseline.wait_ready("/docs")
        for variant in variants:
            variant.wait_ready("/ready")
        load_peak = {"nlp-serve": ours.peak_memory_mb(), "baseline": baseline.peak_memory_mb()}
        for index, (name, path, body, runs, new_tokens) in enumerate(scenarios(inputs, args.smoke)):
            sides = [ours, baseline] if index % 2 == 0 else [baseline, ours]
            if name in COMPLETION_SCENARIOS:
                sides = sides + variants
            for server in sides:
                for _ in range(args.warmup):
                    post(server.url + path, body)
            for concurrency, requests in runs:
                if args.smoke:  # exercise every code path, in seconds
                    concurrency = min(concurrency, 2)
                requests = max(requests, concurrency)  # hey needs n >= c
                for server in sides:
                    server.reset_peak_memory()
                    latencies, statuses, elapsed = hey(server.url + path, body, requests, concurrency)
                    ok = sum(1 for s in statuses if s == 200)
                    entry = {
                        "scenario": name, "side": server.name, "concurrency": concurrency,
                        "requests": len(statuses), "ok": ok,
                        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
                        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
                        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
                        "mean_ms": round(statistics.mean(latencies) * 1000, 1) if latencies else None,
                        "requests_per_s": round(ok / elapsed, 3),
                        "tokens_per_s": round(ok * new_tokens / elapsed, 1) if new_tokens else None,
                        "peak_rss_mb": round(server.peak_memory_mb(), 1),
                    }
                    results.append(entry)
                    print(json.dumps(entry), flush=True)
    finally:
        ours.stop()
        baseline.stop()
        for variant in variants:
            variant.stop()
    for entry in results:
        other = next(e for e in results if e["scenario"] == entry["scenario"]
                     and e["concurrency"] == entry["concurrency"] and e["side"] == "baseline")
        if entry["side"].startswith("nlp-serve"):
            entry["ratio_p50"] = round(entry["p50_ms"] / other["p50_ms"], 3)
            entry["ratio_requests_per_s"] = round(entry["requests_per_s"] / other["requests_per_s"], 3)
    print("comparing weight precisions", flush=True)
    precisions = precision_report(args.binary, models, args.smoke)
    summary = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "machine": machine_description(),
        "limits": limits,
        "inputs": {k: v for k, v in inputs.items() if k.endswith("_tokens") or k.endswith("_words")},
        "load_peak_rss_mb": load_peak,
        "versions": versions(args.binary),
        "results": results,
        "physical": physical(results, limits),
        "precisions": precisions,
        "previous": previous,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_report(args.out, summary)
    return summary


def machine_description():
    cpu = "unknown"
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = int(re.search(r"MemTotal:\s+(\d+)", pathlib.Path("/proc/meminfo").read_text()).group(1))
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(memory / 1024 / 1024, 1),
            "kernel": platform.release()}


def versions(binary):
    import fastapi
    import torch
    import transformers
    import uvicorn
    return {"python": platform.python_version(), "torch (baseline)": torch.__version__,
            "transformers": transformers.__version__, "fastapi": fastapi.__version__,
            "uvicorn": uvicorn.__version__, "nlp-serve": subprocess.run(
                [str(binary), "--version"], capture_output=True, text=True).stdout.strip(),
            "libtorch (nlp-serve)": "2.4.0"}


def physical(results, limits):
    """Batch-1 decoding against the bandwidth bound; QA and translation against compute."""
    def find(scenario, side, concurrency=1):
        return next((e for e in results if e["scenario"] == scenario and e["side"] == side
                     and e["concurrency"] == concurrency), None)
    bandwidth = limits["memory_bandwidth_gb_s"] * 1e9
    flops = limits["matmul_fp32_gflop_s"] * 1e9
    # distilgpt2: every weight but the position table is read once per token
    # (the tied embedding as the output projection), in fp32.
    gpt2_weights = (6 * (4 * 768 * 768 + 2 * 768 * 3072) + 50257 * 768) * 4
    token_bound_ms = gpt2_weights / bandwidth * 1000
    # distilbert: 6 layers x (4 d^2 + 2 d ff) multiply-adds per token, plus attention.
    d, ff, seq = 768, 3072, 384
    window_flops = 2 * 6 * (seq * (4 * d * d + 2 * d * ff) + 2 * seq * seq * d)
    # opus-mt-en-de, one 26-word sentence (~35 source tokens), 40 new tokens, 4 beams:
    # encoder 6 x (4 d^2 + 2 d ff) per source token; decoder 6 x (8 d^2 + 2 d ff)
    # plus the 512 x 58,101 output projection per generated token and beam.
    md, mff, src, new, beams = 512, 2048, 35, TRANSLATION_NEW_TOKENS, 4
    sentence_flops = 2 * (src * 6 * (4 * md * md + 2 * md * mff)
                          + new * beams * (6 * (8 * md * md + 2 * md * mff) + md * 58101))
    out = {"distilgpt2_bytes_per_token": gpt2_weights, "decode_bound_ms_per_token": round(token_bound_ms, 2),
           "qa_window_gflop": round(window_flops / 1e9, 1),
           "translation_sentence_gflop": round(sentence_flops / 1e9, 1)}
    for side in ("nlp-serve", "baseline"):
        playground = find("playground", side)
        if playground:
            per_token = playground["p50_ms"] / 128
            out[f"{side}_decode_ms_per_token"] = round(per_token, 2)
            out[f"{side}_decode_fraction_of_bandwidth_bound"] = round(token_bound_ms / per_token, 3)
        qa = find("qa_paragraph", side)
        if qa:
            bound_ms = window_flops / flops * 1000
            out[f"{side}_qa_fraction_of_compute_bound"] = round(bound_ms / qa["p50_ms"], 3)
        sentence = find("translate_sentence", side)
        if sentence:
            bound_ms = sentence_flops / flops * 1000
            out[f"{side}_translation_fraction_of_compute_bound"] = round(bound_ms / sentence["p50_ms"], 3)
    return out


def write_report(out, summary):
    rows = [e for e in summary["results"] if e["side"] == "nlp-serve"]
    lines = [
        f"# Benchmark: nlp-serve vs. the Python baseline{' (smoke run, tiny models)' if summary['smoke'] else ''}",
        "",
        f"Run {summary['date']} on {summary['machine']['cpu']}, {summary['machine']['cores']} cores, "
        f"{summary['machine']['memory_gb']} GB. Both servers use {summary['limits']['threads']} threads, "
        "the same random-weight checkpoints with the exact shapes of distilgpt2, "
        "distilbert-base-cased-distilled-squad and opus-mt-en-de, the same requests, run interleaved.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in summary["versions"].items()) + ".",
        "",
        "| scenario | conc. | side | p50 ms | p95 ms | p99 ms | req/s | tokens/s | peak RSS MB | p50 ratio | req/s ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in summary["results"]:
        lines.append("| {scenario} | {concurrency} | {side} | {p50_ms} | {p95_ms} | {p99_ms} | {requests_per_s} | {tokens} | {peak_rss_mb} | {r1} | {r2} |".format(
            tokens=entry["tokens_per_s"] if entry["tokens_per_s"] is not None else "",
            r1=entry.get("ratio_p50", ""), r2=entry.get("ratio_requests_per_s", ""), **entry))
    lines += ["", "Ratios are nlp-serve / baseline: below 1 is better for p50, above 1 is better for req/s. "
              "\"nlp-serve fp16\" and \"nlp-serve int8\" are the same server with `[completion] precision` "
              "set (completion scenarios only); plain \"nlp-serve\" is the fp32 default.", ""]
    lines += targets_section(summary) + change_section(summary) + precision_section(summary)
    lines += ["",
              "![p50 latency and throughput](latency.png)", "",
              "Peak resident memory while loading the three models: " + ", ".join(
                  f"{k} {round(v)} MB" for k, v in summary["load_peak_rss_mb"].items()) + ".", "",
              "Where the time goes, and what to change: [analysis.md](analysis.md) (written by hand "
              "from this run and a profile).", "", "## The machine's limits", "",
              f"Memory bandwidth (copy): {summary['limits']['memory_bandwidth_gb_s']} GB/s; "
              f"fp32 matmul: {summary['limits']['matmul_fp32_gflop_s']} GFLOP/s.", ""]
    for key, value in summary["physical"].items():
        lines.append(f"- {key}: {value}")
    lines += ["", "Inputs: " + ", ".join(f"{k} {v}" for k, v in summary["inputs"].items()) + "."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    plot(out, summary)


def targets_section(summary):
    """The serving-engine issue's targets, checked against this run."""
    results = summary["results"]

    def rows(scenario, concurrency):
        """nlp-serve rows at `concurrency`, or at the highest one run (smoke runs cap it)."""
        levels = [e["concurrency"] for e in results if e["scenario"] == scenario]
        level = concurrency if concurrency in levels or not levels else max(levels)
        return [e for e in results if e["scenario"] == scenario and e["concurrency"] == level
                and e["side"].startswith("nlp-serve")]
    lines = ["## Targets", "",
             "Autocomplete p50 at concurrency 1 at most 0.6 of the baseline's; throughput at concurrency 16 "
             "at least 3 times the baseline's.", "",
             "| check | side | ratio | met |", "|---|---|---|---|"]
    for entry in rows("autocomplete", 1):
        lines.append(f"| autocomplete p50, c=1 | {entry['side']} | {entry['ratio_p50']} | "
                     f"{'yes' if entry['ratio_p50'] <= 0.6 else 'no'} |")
    for scenario in ("autocomplete", "qa_paragraph", "translate_sentence", "translate_paragraph"):
        for entry in rows(scenario, 16):
            ratio = entry["ratio_requests_per_s"]
            lines.append(f"| {scenario} req/s, c={entry['concurrency']} | {entry['side']} | {ratio} | "
                         f"{'yes' if ratio >= 3 else 'no'} |")
    return lines + [""]


def change_section(summary):
    """nlp-serve (fp32) now against the previous committed run."""
    previous = summary.get("previous")
    if not previous:
        return []
    lines = [f"## Change since the previous run ({previous['date']})", "",
             "| scenario | conc. | p50 ms before | p50 ms now | req/s before | req/s now | req/s change |",
             "|---|---|---|---|---|---|---|"]
    for entry in summary["results"]:
        if entry["side"] != "nlp-serve":
            continue
        before = next((e for e in previous["results"] if e["scenario"] == entry["scenario"]
                       and e["concurrency"] == entry["concurrency"]), None)
        if before:
            change = round(entry["requests_per_s"] / before["requests_per_s"], 2) if before["requests_per_s"] else ""
            lines.append(f"| {entry['scenario']} | {entry['concurrency']} | {before['p50_ms']} | {entry['p50_ms']} "
                         f"| {before['requests_per_s']} | {entry['requests_per_s']} | {change}x |")
    return lines + [""]


def precision_section(summary):
    lines = ["## Weight precision against fp32 (distilgpt2 shape)", "",
             "From `precision-report` (src/bin/precision-report.rs): greedy continuations of 32-token windows "
             "of the reference document, decoded at batch size 1. The weights are random, so the logits are "
             "nearly flat and near-ties are far more common than with trained weights: agreement here is a "
             "lower bound.", "",
             "| precision | decode step ms (p50) | greedy identical | mean agreeing prefix | top-1 agreement on fp32 path | max logit change (in std) |",
             "|---|---|---|---|---|---|"]
    for row in summary["precisions"]:
        lines.append("| {p} | {ms:.2f} | {same} | {prefix} | {top1} | {drift} |".format(
            p=row["precision"], ms=row["decode_step_ms_p50"],
            same=f"{row['greedy_identical_share']:.0%} of {row['prompts']}" if "prompts" in row else "reference",
            prefix=f"{row['mean_agreeing_prefix_tokens']:.1f} of {row['tokens']}" if "tokens" in row else "",
            top1=f"{row['top1_agreement_along_fp32_path']:.1%}" if "tokens" in row else "",
            drift=f"{row['max_logit_difference_in_std']:.4f}" if "tokens" in row else ""))
    return lines + [""]


def plot(out, summary):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = []
    for entry in summary["results"]:
        key = (entry["scenario"], entry["concurrency"])
        if key not in keys:
            keys.append(key)
    labels = [f"{s}\nc={c}" for s, c in keys]

    def value(side, key, field):
        return next((e[field] for e in summary["results"] if e["side"] == side
                     and (e["scenario"], e["concurrency"]) == key), 0)

    figure, axes = plt.subplots(2, 1, figsize=(12, 8))
    sides = (("baseline", "#dd6b20"), ("nlp-serve", "#2b6cb0"),
             ("nlp-serve fp16", "#63b3ed"), ("nlp-serve int8", "#38a169"))
    width = 0.8 / len(sides)
    positions = range(len(keys))
    for index, (side, colour) in enumerate(sides):
        offset = (index - (len(sides) - 1) / 2) * width
        axes[0].bar([p + offset for p in positions], [value(side, k, "p50_ms") for k in keys], width, label=side, color=colour)
        axes[1].bar([p + offset for p in positions], [value(side, k, "requests_per_s") for k in keys], width, label=side, color=colour)
    axes[0].set_ylabel("p50 latency (ms, log)")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("requests/s (log)")
    axes[1].set_yscale("log")
    for axis in axes:
        axis.set_xticks(list(positions))
        axis.set_xticklabels(labels, fontsize=8)
        axis.legend()
    axes[0].set_title("nlp-serve vs. transformers + FastAPI (same weights, same machine)")
    figure.tight_layout()
    figure.savefig(out / "latency.png", dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--binary", type=pathlib.Path, default=ROOT / "target/release/nlp-serve")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--previous", type=pathlib.Path,
                        help="summary.json of the run to compare with (default: the one in --out)")
    args = parser.parse_args()
    summary = run(args)
    failed = [e for e in summary["results"] if e["ok"] != e["requests"]]
    if failed:
        print(f"{len(failed)} runs had failed requests", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
