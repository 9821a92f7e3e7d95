"""Benchmark harness: nlp-serve against the engines people use instead, interleaved.

Starts every side on the same weights (bench/make_full_models.py, converted
for the peers by bench/prepare_peers.py): nlp-serve at each precision, the
Python baseline (transformers pipelines), CTranslate2 (float32, int8) for
completion and translation, ONNX Runtime (fp32, int8) for question answering;
the peers behind the same FastAPI front as the baseline (bench/baseline/).
Drives each scenario with `hey` (a load generator from Debian) against every
side that serves its task, records latency percentiles, throughput and peak
resident memory, measures the machine's memory bandwidth and matmul
throughput, and writes summary.json, report.md and a plot.

    python bench/run.py --models bench/models/full --out bench/results          # full run
    python bench/run.py --models bench/models/small --out build/bench-smoke --smoke
"""

import argparse
import collections
import csv
import datetime
import functools
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
import tomllib
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "resources/documents/machine-learning.md"
TRANSLATION_NEW_TOKENS = 40
QUESTION = "Who introduced support vector machines?"


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
    marian = AutoTokenizer.from_pretrained(models / "opus-mt-en-de")
    return {
        "prompt32": prompt32, "prompt32_tokens": len(gpt2(prompt32)["input_ids"]),
        "prompt64": prompt64, "prompt64_tokens": len(gpt2(prompt64)["input_ids"]),
        "context": context, "context_tokens": len(bert(context)["input_ids"]),
        "qa_window_tokens": len(bert(QUESTION, context, truncation="only_second", max_length=384)["input_ids"]),
        "document_tokens": len(bert(document)["input_ids"]),
        "sentence": sentence, "sentence_words": len(sentence.split()),
        "sentence_tokens": len(marian(sentence)["input_ids"]),
        "paragraph": paragraph10,
    }


def scenarios(inputs, smoke):
    scale = 0.02 if smoke else 1.0

    def n(count):
        return max(2, int(count * scale))

    question = QUESTION
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
        # nlp-serve only: BM25 over STORED_COPIES stored copies of the reference document.
        ("qa_all_documents", "/qa", {"question": question, "documents": "all"}, [(1, n(30))], 0),
        ("translate_sentence", "/translate", {"text": inputs["sentence"]},
         [(1, n(30)), (16, n(64))], TRANSLATION_NEW_TOKENS),
        ("translate_paragraph", "/translate", {"text": inputs["paragraph"]},
         [(1, n(8)), (16, n(32))], TRANSLATION_NEW_TOKENS * 10),
    ]


TASK_OF_PATH = {"/complete": "completion", "/qa": "qa", "/translate": "translation"}


@functools.cache
def task_of_scenario():
    """Each scenario's task, from its path in scenarios() (which needs no real inputs for that)."""
    return {name: TASK_OF_PATH[path] for name, path, *_ in scenarios(collections.defaultdict(str), False)}

# nlp-serve's precisions per task: `[<task>] precision` in its configuration.
# A task joins a precision here as soon as nlp-serve supports it there. bf16 runs every
# task, but only QA's wide products gain from it (AMX / AVX-512 BF16); a decoding step's
# few rows do not, so precision-report measures it there and the benchmark leaves it out.
NLP_SERVE_PRECISIONS = {"fp32": ("completion", "qa", "translation"),
                        "fp16": ("completion", "qa", "translation"),
                        "int8": ("completion", "qa", "translation"),
                        "bf16": ("qa",)}

# The other sides: (name, engine, precision, tasks), each a bench/baseline/server.py process.
PEERS = (("transformers", "transformers", "float32", ("completion", "qa", "translation")),
         ("ctranslate2 float32", "ctranslate2", "float32", ("completion", "translation")),
         ("ctranslate2 int8", "ctranslate2", "int8", ("completion", "translation")),
         ("onnxruntime fp32", "onnxruntime", "float32", ("qa",)),
         ("onnxruntime int8", "onnxruntime", "int8", ("qa",)))

FULL_PRECISION_PEERS = ("ctranslate2 float32", "onnxruntime fp32")

# Bytes per weight as each side stores its linear layers (scales and biases left out).
BYTES_PER_WEIGHT = {"fp32": 4, "float32": 4, "fp16": 2, "bf16": 2, "int8": 1}


def side_precision(name, task=None):
    """"nlp-serve int8" is int8; "transformers" is float32; plain "nlp-serve" runs `task` at its
    default precision (config/default.toml), fp32 when no task is given."""
    for precision in BYTES_PER_WEIGHT:
        if name.endswith(" " + precision):
            return precision
    if name == "nlp-serve" and task:
        return default_precisions().get(task, "fp32")
    return "fp32"


@functools.cache
def default_precisions():
    """Each task's precision in config/default.toml, read once; QA's "auto" as the server
    resolves it on this CPU (src/qa/precision.rs)."""
    config = tomllib.loads((ROOT / "config" / "default.toml").read_text(encoding="utf-8"))
    flags = cpu_flags()
    vnni = {"avx512f", "avx512bw", "avx512_vnni"} <= flags
    auto = ("int8" if "amx_int8" in flags or vnni else "bf16" if "avx512_bf16" in flags
            else "int8" if "avx2" in flags else "fp32")
    return {task: auto if section.get("precision") == "auto" else section.get("precision", "fp32")
            for task, section in config.items() if isinstance(section, dict)}


@functools.cache
def cpu_flags():
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def is_ours(name):
    return name.startswith("nlp-serve")


def write_service_config(path, models, threads, precision, tasks):
    """nlp-serve serving `tasks` at `precision` (fp32 tasks keep their defaults), with an empty
    document store of its own next to `path`."""
    database = path.with_suffix(".sqlite")
    for stale in path.parent.glob(database.name + "*"):
        stale.unlink()
    text = f"""# Generated by bench/run.py: nlp-serve on the benchmark models.
[server]
host = "127.0.0.1"
workers = {threads}
[logging]
level = "warn"
[runtime]
torch_threads = {threads}
[documents]
database = "{database}"
"""
    sections = {
        "completion": f'source = "{models / "distilgpt2"}"\nqueue_size = 256\n',
        "qa": f'source = "{models / "distilbert-squad"}"\nqueue_size = 256\n',
        "translation": (f'source = "{models / "opus-mt-en-de"}"\nqueue_size = 256\nnum_beams = 4\n'
                        f"min_output_tokens = {TRANSLATION_NEW_TOKENS}\n"
                        f"max_output_tokens = {TRANSLATION_NEW_TOKENS}\n"),
    }
    for task, body in sections.items():
        if task not in tasks:
            text += f"[{task}]\nenabled = false\n"
        else:
            text += f"[{task}]\n{body}" + (f'precision = "{precision}"\n' if precision != "fp32" else "")
    path.write_text(text)


def start_sides(args, models, logs, needed):
    """Every side serving a `needed` task, each its own process; returns [(server, tasks, ready path)]."""
    sides = []
    for precision, tasks in NLP_SERVE_PRECISIONS.items():
        tasks = tuple(task for task in tasks if task in needed)
        # Without bfloat16 instructions bf16 is emulated, several times slower than fp32
        # (the server warns so at load): measuring it there only lengthens the run.
        if precision == "bf16" and not {"avx512_bf16", "amx_bf16"} & cpu_flags():
            tasks = ()
        if not tasks:
            continue
        name = "nlp-serve" if precision == "fp32" else f"nlp-serve {precision}"
        config = args.out / f"{name.replace(' ', '-')}.toml"
        write_service_config(config, models, args.threads, precision, tasks)
        port = free_port()
        sides.append((Server(name, [str(args.binary), "--config", str(config)], {"PORT": str(port)}, port, logs),
                      tasks, "/ready"))
    for name, engine, precision, tasks in PEERS:
        if not set(tasks) & needed:
            continue
        port = free_port()
        command = [sys.executable, "-m", "uvicorn", "bench.baseline.server:app", "--host", "127.0.0.1",
                   "--port", str(port), "--workers", "1", "--log-level", "warning"]
        env = {"BASELINE_MODELS": str(models), "BASELINE_THREADS": str(args.threads),
               "BASELINE_ENGINE": engine, "BASELINE_PRECISION": precision,
               "BASELINE_TRANSLATION_TOKENS": str(TRANSLATION_NEW_TOKENS),
               "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
        sides.append((Server(name, command, env, port, logs), tasks, "/docs"))
    return sides


def run(args):
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    logs.mkdir(exist_ok=True)
    models = args.models.resolve()
    previous = previous_results(args.previous or args.out / "summary.json")
    print("measuring the machine", flush=True)
    limits = machine_limits(args.threads)
    inputs = build_inputs(models)
    chosen = [scenario for scenario in scenarios(inputs, args.smoke)
              if not args.only or scenario[0] in args.only.split(",")]
    needed = {TASK_OF_PATH[path] for _, path, _, _, _ in chosen}
    sides = [side for side in start_sides(args, models, logs, needed)]
    results = []
    answers = {}  # scenario -> side -> the first warm-up answer
    try:
        for server, _, ready in sides:
            server.wait_ready(ready)
        load_peak = {server.name: server.peak_memory_mb() for server, _, _ in sides}
        for index, (name, path, body, runs, new_tokens) in enumerate(chosen):
            serving = [server for server, tasks, _ in sides if TASK_OF_PATH[path] in tasks
                       and (name not in OURS_ONLY or is_ours(server.name))]
            if name in OURS_ONLY:
                for server in serving:
                    entry = store_documents(server, 5 if args.smoke else STORED_COPIES)
                    results.append(entry)
                    print(json.dumps(entry), flush=True)
            # Rotate the order from one scenario to the next so that no side always goes first.
            shift = index % len(serving)
            serving = serving[shift:] + serving[:shift]
            for server in serving:
                for attempt in range(max(1, args.warmup)):
                    answer = post(server.url + path, body)
                    if attempt == 0:
                        answers.setdefault(name, {})[server.name] = answer
            for concurrency, requests in runs:
                if args.smoke:  # exercise every code path, in seconds
                    concurrency = min(concurrency, 2)
                requests = max(requests, concurrency)  # hey needs n >= c
                for server in serving:
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
        for server, _, _ in sides:
            server.stop()
    add_ratios(results)
    print("comparing weight precisions", flush=True)
    precisions = precision_report(args.binary, models, args.smoke, needed)
    summary = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "machine": machine_description(),
        "limits": limits,
        "inputs": {k: v for k, v in inputs.items() if k.endswith("_tokens") or k.endswith("_words")},
        "load_peak_rss_mb": load_peak,
        "versions": versions(args.binary),
        "results": results,
        "roofline": roofline(results, limits, inputs, models),
        "agreement": agreement(answers),
        "precisions": precisions,
        "previous": previous,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_report(args.out, summary)
    return summary


# Deterministic scenarios whose answers the sides can be compared on (the playground samples).
# qa_document is not compared: nlp-serve reads the passages BM25 picks, the peers every window.
COMPARED = ("autocomplete", "qa_paragraph", "translate_sentence", "translate_paragraph")

# Scenarios no peer serves (the document store), and how many documents of the reference
# document's size are stored in each nlp-serve side before them.
OURS_ONLY = ("qa_all_documents",)
# Scenarios where nlp-serve does less work than the peers by design: no ratios against them.
NOT_LIKE_FOR_LIKE = ("qa_document",)
STORED_COPIES = 100


def store_documents(server, copies):
    """Stores `copies` copies of the reference document; the timing row of their POSTs."""
    text = DOCUMENT.read_text(encoding="utf-8")
    latencies = []
    started = time.perf_counter()
    for index in range(copies):
        begun = time.perf_counter()
        post(server.url + "/documents", {"title": f"copy {index}", "text": text})
        latencies.append(time.perf_counter() - begun)
    elapsed = time.perf_counter() - started
    return {
        "scenario": "store_document", "side": server.name, "concurrency": 1,
        "requests": copies, "ok": copies,
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "mean_ms": round(statistics.mean(latencies) * 1000, 1),
        "requests_per_s": round(copies / elapsed, 3), "tokens_per_s": None,
        "peak_rss_mb": round(server.peak_memory_mb(), 1),
    }


def agreement(answers):
    """Whether each side gave transformers' answer to the same request: the peers at full
    precision should, token for token, on the same weights."""
    def essence(answer):
        if "completions" in answer:
            return [c["text"] for c in answer["completions"]]
        if "answers" in answer:
            return [(a["text"], a["start"], a["end"]) for a in answer["answers"]]
        return answer.get("translations")
    rows = []
    for scenario in COMPARED:
        by_side = answers.get(scenario, {})
        reference = by_side.get("transformers")
        if reference is None:
            continue
        for side, answer in by_side.items():
            if side != "transformers":
                rows.append({"scenario": scenario, "side": side,
                             "same_as_transformers": essence(answer) == essence(reference)})
    return rows


def add_ratios(results):
    """nlp-serve rows against transformers and against the best peer of the same run.

    The best peer is the fastest side that is not nlp-serve: lowest p50 for the
    latency ratio, highest req/s for the throughput ratio (usually the same side)."""
    for entry in results:
        # qa_document: nlp-serve reads retrieved passages, the peers the whole document.
        if not is_ours(entry["side"]) or entry["scenario"] in NOT_LIKE_FOR_LIKE:
            continue
        same = [e for e in results if e["scenario"] == entry["scenario"]
                and e["concurrency"] == entry["concurrency"] and not is_ours(e["side"]) and e["ok"]]
        transformers = next((e for e in same if e["side"] == "transformers"), None)
        if transformers:
            entry["ratio_p50"] = round(entry["p50_ms"] / transformers["p50_ms"], 3)
            entry["ratio_requests_per_s"] = round(entry["requests_per_s"] / transformers["requests_per_s"], 3)
        if same:
            fastest = min(same, key=lambda e: e["p50_ms"])
            busiest = max(same, key=lambda e: e["requests_per_s"])
            entry["best_peer_p50"] = fastest["side"]
            entry["ratio_p50_best_peer"] = round(entry["p50_ms"] / fastest["p50_ms"], 3)
            entry["best_peer_requests_per_s"] = busiest["side"]
            entry["ratio_requests_per_s_best_peer"] = round(entry["requests_per_s"] / busiest["requests_per_s"], 3)


def precision_report(binary, models, smoke, tasks):
    """fp16/int8/bf16 against fp32 per task (src/bin/precision-report/): answers identical to fp32's, drift, speed."""
    tool = binary.parent / "precision-report"
    counts = {"completion": ("distilgpt2", ("4", "8") if smoke else ("24", "32")),
              "qa": ("distilbert-squad", ("2",) if smoke else ("12",)),
              "translation": ("opus-mt-en-de", ("2", "8") if smoke else ("8", str(TRANSLATION_NEW_TOKENS)))}
    report = {}
    for task, (model, arguments) in counts.items():
        if task not in tasks:
            continue
        output = subprocess.run([str(tool), str(models / model), str(DOCUMENT), *arguments],
                                capture_output=True, text=True, check=True).stdout
        report[task] = json.loads(output)
    return report


def previous_results(path):
    """The nlp-serve rows of an earlier run, for the change table, with the peer rows that
    table divides them by (absolute times move by half between machines and days here)."""
    if not path.exists():
        return None
    previous = json.loads(path.read_text())
    rows = previous.get("results", [])
    return {"date": previous.get("date"),
            "results": [e for e in rows if e["side"] == "nlp-serve" or not is_ours(e["side"])]}


def machine_description():
    cpu = "unknown"
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = int(re.search(r"MemTotal:\s+(\d+)", pathlib.Path("/proc/meminfo").read_text()).group(1))
    flags = cpu_flags()
    features = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    return {"cpu": cpu, "features": " ".join(features) or "none of note", "cores": os.cpu_count(), "memory_gb": round(memory / 1024 / 1024, 1),
            "kernel": platform.release()}


def versions(binary):
    import ctranslate2
    import fastapi
    import onnxruntime
    import torch
    import transformers
    import uvicorn
    return {"python": platform.python_version(), "torch (transformers side)": torch.__version__,
            "transformers": transformers.__version__, "ctranslate2": ctranslate2.__version__,
            "onnxruntime": onnxruntime.__version__, "fastapi": fastapi.__version__,
            "uvicorn": uvicorn.__version__, "nlp-serve": subprocess.run(
                [str(binary), "--version"], capture_output=True, text=True).stdout.strip(),
            "libtorch (nlp-serve)": "2.4.0"}


def roofline(results, limits, inputs, models):
    """Each side against the machine's bounds, per task and precision.

    Completion: one decoding step reads every weight once (the tied embedding
    as the output projection), so its bound is the bytes of weights at the
    side's precision over the measured bandwidth; the measured step is the
    playground's p50 at concurrency 1 over its 128 tokens (prefill and HTTP
    included, so a slight overestimate). QA and translation: floating-point
    work per window / per sentence over the measured fp32 matmul peak
    (reduced-precision sides can exceed it)."""
    bandwidth = limits["memory_bandwidth_gb_s"] * 1e9
    flops = limits["matmul_fp32_gflop_s"] * 1e9
    gpt2, bert, marian = (json.loads((models / name / "config.json").read_text())
                          for name in ("distilgpt2", "distilbert-squad", "opus-mt-en-de"))
    d, ff = gpt2["n_embd"], gpt2.get("n_inner") or 4 * gpt2["n_embd"]
    gpt2_weights = gpt2["n_layer"] * (4 * d * d + 2 * d * ff) + gpt2["vocab_size"] * d
    # distilbert: per layer and token 4 d^2 + 2 d ff multiply-adds, plus attention scores and mixing.
    d, ff, seq = bert["dim"], bert["hidden_dim"], inputs["qa_window_tokens"]
    window_flops = 2 * bert["n_layers"] * (seq * (4 * d * d + 2 * d * ff) + 2 * seq * seq * d)
    # opus-mt-en-de, the scenario's sentence, 40 new tokens, 4 beams: encoder (4 d^2 + 2 d ff) per layer and
    # source token; decoder (8 d^2 + 2 d ff) per layer plus the d x vocabulary output projection per token and beam.
    d, src, new, beams = marian["d_model"], inputs["sentence_tokens"], TRANSLATION_NEW_TOKENS, 4
    sentence_flops = 2 * (src * marian["encoder_layers"] * (4 * d * d + 2 * d * marian["encoder_ffn_dim"])
                          + new * beams * (marian["decoder_layers"] * (8 * d * d + 2 * d * marian["decoder_ffn_dim"])
                                           + d * marian["vocab_size"]))
    tasks = (("completion", "playground", 128), ("qa", "qa_paragraph", 1), ("translation", "translate_sentence", 1))
    rows = []
    for task, scenario, units in tasks:
        for entry in results:
            if entry["scenario"] != scenario or entry["concurrency"] != 1 or not entry["ok"]:
                continue
            precision = side_precision(entry["side"], task)
            measured_ms = entry["p50_ms"] / units
            if task == "completion":
                work = gpt2_weights * BYTES_PER_WEIGHT[precision]
                bound_ms, unit = work / bandwidth * 1000, f"{work / 1e6:.0f} MB read per token"
            else:
                work = window_flops if task == "qa" else sentence_flops
                what = f"window of {seq} tokens" if task == "qa" else f"sentence ({src} -> {new} tokens, 4 beams)"
                bound_ms, unit = work / flops * 1000, f"{work / 1e9:.1f} GFLOP per {what}"
            rows.append({"task": task, "side": entry["side"], "precision": precision, "work": unit,
                         "bound_ms": round(bound_ms, 2), "measured_ms": round(measured_ms, 2),
                         "share_of_bound": round(bound_ms / measured_ms, 3)})
    return rows


def analysis_link(out):
    """The hand-written analysis (bench/results/analysis.md), relative to the report in `out`."""
    analysis = pathlib.Path(__file__).resolve().parent / "results" / "analysis.md"
    return pathlib.Path(os.path.relpath(analysis, pathlib.Path(out).resolve())).as_posix()


def write_report(out, summary):
    sides = []
    for entry in summary["results"]:
        if entry["side"] not in sides:
            sides.append(entry["side"])
    lines = [
        f"# Benchmark: nlp-serve vs. transformers, CTranslate2 and ONNX Runtime"
        f"{' (smoke run, small models)' if summary['smoke'] else ''}",
        "",
        f"Run {summary['date']} on {summary['machine']['cpu']} "
        f"({summary['machine'].get('features', 'features not recorded')}), {summary['machine']['cores']} cores, "
        f"{summary['machine']['memory_gb']} GB. Every side uses {summary['limits']['threads']} threads, "
        "the same random-weight checkpoints with the exact shapes of distilgpt2, "
        "distilbert-base-cased-distilled-squad and opus-mt-en-de (converted from the same weights for "
        "CTranslate2 and ONNX Runtime), the same requests over HTTP, run interleaved. Sides: "
        + ", ".join(sides) + ". The peers answer through the transformers baseline's FastAPI front; "
        "CTranslate2 and ONNX Runtime gather concurrent requests into one batched call (up to 16, 3 ms wait).",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in summary["versions"].items()) + ".",
        "",
    ]
    lines += best_peer_section(summary) + targets_section(summary)
    lines += ["## Every side", "",
              "| scenario | conc. | side | p50 ms | p95 ms | p99 ms | req/s | tokens/s | peak RSS MB "
              "| p50 / transformers | req/s / transformers | p50 / best peer | req/s / best peer |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for entry in summary["results"]:
        lines.append("| {scenario} | {concurrency} | {side} | {p50_ms} | {p95_ms} | {p99_ms} | {requests_per_s} "
                     "| {tokens} | {peak_rss_mb} | {r1} | {r2} | {r3} | {r4} |".format(
                         tokens=entry["tokens_per_s"] if entry["tokens_per_s"] is not None else "",
                         r1=entry.get("ratio_p50", ""), r2=entry.get("ratio_requests_per_s", ""),
                         r3=entry.get("ratio_p50_best_peer", ""), r4=entry.get("ratio_requests_per_s_best_peer", ""),
                         **entry))
    lines += ["", "Ratios are nlp-serve / the other side: below 1 is better for p50, above 1 is better for req/s. "
              "\"nlp-serve fp16\", \"nlp-serve int8\" and \"nlp-serve bf16\" are the same server with `[<task>] precision` set, on "
              "the tasks that support it (bf16 only on CPUs with bfloat16 instructions); plain \"nlp-serve\" runs each task at its default precision "
              "(config/default.toml: fp32, but for QA \"auto\", which is " + default_precisions().get("qa", "fp32")
              + " on this CPU).", ""]
    lines += roofline_section(summary) + agreement_section(summary) + change_section(summary)
    lines += precision_section(summary)
    lines += ["",
              "![p50 latency and throughput](latency.png)", "",
              "Peak resident memory while loading, per side: " + ", ".join(
                  f"{k} {round(v)} MB" for k, v in summary["load_peak_rss_mb"].items()) + ".", "",
              f"Where the time goes, and what to change: [analysis.md]({analysis_link(out)}) (written by "
              "hand from a run and a profile).", "", "## The machine's limits", "",
              f"Memory bandwidth (copy): {summary['limits']['memory_bandwidth_gb_s']} GB/s; "
              f"fp32 matmul: {summary['limits']['matmul_fp32_gflop_s']} GFLOP/s.", ""]
    lines += ["Inputs: " + ", ".join(f"{k} {v}" for k, v in summary["inputs"].items()) + "."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    plot(out, summary)


def best_peer_section(summary):
    """Per scenario: nlp-serve's fastest precision against the fastest other side."""
    results = summary["results"]
    keys = []
    for entry in results:
        if (entry["scenario"], entry["concurrency"]) not in keys:
            keys.append((entry["scenario"], entry["concurrency"]))
    lines = ["## nlp-serve against the best peer", "",
             "For each scenario, nlp-serve's fastest precision (and its default precision where that is another row) "
             "against the fastest side that is not nlp-serve, and against transformers.", "",
             "| scenario | conc. | nlp-serve side | p50 ms | req/s | best peer (p50) | p50 ms | p50 ratio "
             "| best peer (req/s) | req/s | req/s ratio | p50 / transformers | req/s / transformers |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for scenario, concurrency in keys:
        rows = [e for e in results if e["scenario"] == scenario and e["concurrency"] == concurrency]
        ours = [e for e in rows if is_ours(e["side"]) and "best_peer_p50" in e]
        if not ours:
            continue
        fastest = min(ours, key=lambda e: e["p50_ms"])
        shown = [fastest] + [e for e in ours if e["side"] == "nlp-serve" and e is not fastest]
        for entry in shown:
            peer_p50 = next(e for e in rows if e["side"] == entry["best_peer_p50"])
            peer_rps = next(e for e in rows if e["side"] == entry["best_peer_requests_per_s"])
            lines.append(f"| {scenario} | {concurrency} | {entry['side']} | {entry['p50_ms']} | "
                         f"{entry['requests_per_s']} | {peer_p50['side']} | {peer_p50['p50_ms']} | "
                         f"**{entry['ratio_p50_best_peer']}** | {peer_rps['side']} | {peer_rps['requests_per_s']} | "
                         f"**{entry['ratio_requests_per_s_best_peer']}** | {entry.get('ratio_p50', '')} | "
                         f"{entry.get('ratio_requests_per_s', '')} |")
    return lines + [""]


# The engine issues' targets against named peers: (scenario, concurrency, metric,
# nlp-serve sides to try, peer, bound): p50 ratio at most `bound`, req/s ratio at least `bound`.
TARGETS = (
    ("translate_sentence", 1, "p50", None, "ctranslate2 int8", 0.5),
    ("translate_sentence", 16, "req/s", None, "ctranslate2 int8", 1.5),
    ("qa_paragraph", 1, "p50", None, "onnxruntime int8", 1.0),
    ("qa_paragraph", 16, "req/s", None, "onnxruntime int8", 1.5),
    ("autocomplete", 1, "p50", "nlp-serve int8", "ctranslate2 int8", 0.6),
    ("autocomplete", 1, "p50", "nlp-serve", "ctranslate2 float32", 1.0),
)

# Targets in milliseconds, no peer (the document store): scenario, concurrency, p50 bound.
ABSOLUTE_TARGETS = (
    ("qa_document", 1, 250.0),
    ("qa_all_documents", 1, 300.0),
    ("store_document", 1, 50.0),
)


def targets_section(summary):
    """The targets against the strongest engines, checked on this run. Where no nlp-serve
    side is named, its best precision for the scenario counts."""
    results = summary["results"]

    def level(scenario, concurrency):
        levels = [e["concurrency"] for e in results if e["scenario"] == scenario]
        return concurrency if concurrency in levels or not levels else max(levels)  # smoke runs cap it

    lines = ["## Targets", "",
             "| check | nlp-serve side | value | peer | peer value | ratio | target | met |",
             "|---|---|---|---|---|---|---|---|"]
    for scenario, concurrency, metric, side, peer, bound in TARGETS:
        at = level(scenario, concurrency)
        rows = [e for e in results if e["scenario"] == scenario and e["concurrency"] == at and e["ok"]]
        other = next((e for e in rows if e["side"] == peer), None)
        ours = [e for e in rows if is_ours(e["side"]) and (side is None or e["side"] == side)]
        if not other or not ours:
            continue
        if metric == "p50":
            entry = min(ours, key=lambda e: e["p50_ms"])
            ratio, value, peer_value = entry["p50_ms"] / other["p50_ms"], entry["p50_ms"], other["p50_ms"]
            met, target = ratio <= bound, f"<= {bound}"
        else:
            entry = max(ours, key=lambda e: e["requests_per_s"])
            ratio = entry["requests_per_s"] / other["requests_per_s"]
            value, peer_value = entry["requests_per_s"], other["requests_per_s"]
            met, target = ratio >= bound, f">= {bound}"
        lines.append(f"| {scenario} {metric}, c={at} | {entry['side']} | {value} | {peer} | {peer_value} | "
                     f"{ratio:.3f} | {target} | {'yes' if met else 'no'} |")
    for scenario, concurrency, bound in ABSOLUTE_TARGETS:
        ours = [e for e in results if e["scenario"] == scenario and e["concurrency"] == level(scenario, concurrency)
                and e["ok"] and is_ours(e["side"])]
        if not ours:
            continue
        entry = min(ours, key=lambda e: e["p50_ms"])
        lines.append(f"| {scenario} p50, c={entry['concurrency']} | {entry['side']} | {entry['p50_ms']} ms | | | | "
                     f"<= {bound:g} ms | {'yes' if entry['p50_ms'] <= bound else 'no'} |")
    return lines + [""]


def agreement_section(summary):
    lines = ["## Same answers as transformers", "",
             "The first answer of each side to each deterministic scenario (greedy completion, QA, beam-4 "
             "translation), compared with transformers' answer to the same request. Full-precision peers run the "
             "same weights and should agree exactly; reduced precisions may not (random weights give nearly flat "
             "logits, so near-ties are common).", "",
             "| side | " + " | ".join(COMPARED) + " |", "|---|" + "---|" * len(COMPARED)]
    sides = []
    for row in summary["agreement"]:
        if row["side"] not in sides:
            sides.append(row["side"])
    for side in sides:
        cells = []
        for scenario in COMPARED:
            row = next((r for r in summary["agreement"] if r["side"] == side and r["scenario"] == scenario), None)
            cells.append("" if row is None else ("same" if row["same_as_transformers"] else "differs"))
        lines.append(f"| {side} | " + " | ".join(cells) + " |")
    return lines + [""]


def roofline_section(summary):
    lines = ["## Against the machine's bounds", "",
             "Completion: bytes of weights read per decoding step at the side's precision over the measured "
             f"bandwidth ({summary['limits']['memory_bandwidth_gb_s']} GB/s); measured: playground p50 at c=1 / "
             "128 tokens. QA and translation: GFLOP per window / per sentence over the measured fp32 matmul "
             f"peak ({summary['limits']['matmul_fp32_gflop_s']} GFLOP/s); measured: p50 at c=1. Share = bound / "
             "measured (1 is the bound; reduced precisions can pass the fp32 compute bound).", "",
             "| task | side | precision | work | bound ms | measured ms | share of bound |",
             "|---|---|---|---|---|---|---|"]
    for row in summary["roofline"]:
        lines.append("| {task} | {side} | {precision} | {work} | {bound_ms} | {measured_ms} | {share_of_bound} |"
                     .format(**row))
    return lines + [""]


def change_section(summary):
    """nlp-serve (default precisions) now against the previous committed run: absolute, and
    relative to the same peer in both runs (like_peer), which divides out the machine's speed
    of the day."""
    previous = summary.get("previous")
    if not previous:
        return []
    lines = [f"## Change since the previous run ({previous['date']})", "",
             "Absolute times move by up to half between machines and days here; the last columns divide "
             "each run's req/s by the same peer's in that run (the fastest peer at the precision of "
             "nlp-serve's default for the task, fp32 for completion and translation), so a change there "
             "is ours.", "",
             "| scenario | conc. | p50 ms before | p50 ms now | req/s before | req/s now | req/s change "
             "| peer | req/s / peer's before | now | change |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for entry in summary["results"]:
        if entry["side"] != "nlp-serve":
            continue
        before = same_row(previous["results"], entry, "nlp-serve")
        if not before:
            continue
        change = round(entry["requests_per_s"] / before["requests_per_s"], 2) if before["requests_per_s"] else ""
        row = (f"| {entry['scenario']} | {entry['concurrency']} | {before['p50_ms']} | {entry['p50_ms']} "
               f"| {before['requests_per_s']} | {entry['requests_per_s']} | {change}x |")
        peer = like_peer(previous["results"], entry)
        peer_before = same_row(previous["results"], entry, peer) if peer else None
        peer_now = same_row(summary["results"], entry, peer) if peer else None
        if peer_before and peer_now and peer_now["requests_per_s"]:  # like_peer: peer_before's is not 0
            relative_before = before["requests_per_s"] / peer_before["requests_per_s"]
            relative_now = entry["requests_per_s"] / peer_now["requests_per_s"]
            row += (f" {peer} | {relative_before:.3f} | {relative_now:.3f} "
                    f"| {relative_now / relative_before:.2f}x |")
        else:
            row += " | | | |"
        lines.append(row)
    return lines + [""]


def like_peer(results, entry):
    """The peer that served `entry`'s scenario fastest in `results` at the precision nlp-serve's
    default side runs it (CTranslate2 float32 for fp32 completion: a peer's gain from
    int8 instructions one machine has and another lacks is not ours to lose), else any peer."""
    task = task_of_scenario().get(entry["scenario"])
    precision = BYTES_PER_WEIGHT.get(side_precision("nlp-serve", task))
    peers = [e for e in results if not is_ours(e["side"]) and e["side"] != "transformers"
             and e["scenario"] == entry["scenario"] and e["concurrency"] == entry["concurrency"]
             and e.get("ok", 1) and e["requests_per_s"]]
    alike = [e for e in peers if BYTES_PER_WEIGHT.get(side_precision(e["side"])) == precision]
    return max(alike or peers, key=lambda e: e["requests_per_s"])["side"] if peers else None


def same_row(results, entry, side):
    """The row of `side` for `entry`'s scenario and concurrency, or None."""
    return next((e for e in results if e["side"] == side and e["scenario"] == entry["scenario"]
                 and e["concurrency"] == entry["concurrency"] and e.get("ok", 1)), None)


def precision_section(summary):
    lines = ["## Weight precision against fp32, per task", "",
             "From `precision-report` (src/bin/precision-report/) on the benchmark's models: GPT-2 greedy "
             "continuations of 32-token windows of the reference document, QA answers to questions about its "
             "paragraphs, Marian greedy and beam-4 translations of its sentences. The weights are random, so "
             "the logits are nearly flat (or collapse onto a few tokens) and the agreement here says little about "
             "trained weights: run `precision-report` on your own model before choosing a reduced precision.", ""]
    for task, rows in summary["precisions"].items():
        keys = [key for key in dict.fromkeys(k for row in rows for k in row) if key != "precision"]
        lines += [f"**{task}**", "", "| precision | " + " | ".join(keys) + " |",
                  "|---|" + "---|" * len(keys)]
        for row in rows:
            cells = []
            for key in keys:
                value = row.get(key, "")
                if isinstance(value, float):
                    value = f"{value:.1%}" if "share" in key or "agreement" in key else f"{value:.3g}"
                cells.append(str(value))
            lines.append(f"| {row['precision']} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


SIDE_COLOURS = {"transformers": "#dd6b20", "ctranslate2 float32": "#805ad5", "ctranslate2 int8": "#d53f8c",
                "onnxruntime fp32": "#718096", "onnxruntime int8": "#2d3748", "nlp-serve": "#2b6cb0",
                "nlp-serve fp16": "#63b3ed", "nlp-serve int8": "#38a169",
                "nlp-serve bf16": "#d69e2e"}


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
    present = {e["side"] for e in summary["results"]}
    sides = [(side, colour) for side, colour in SIDE_COLOURS.items() if side in present]

    def value(side, key, field):
        return next((e[field] for e in summary["results"] if e["side"] == side
                     and (e["scenario"], e["concurrency"]) == key), 0)

    figure, axes = plt.subplots(2, 1, figsize=(14, 8))
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
        axis.legend(fontsize=7, ncol=4)
    axes[0].set_title("nlp-serve vs. transformers, CTranslate2 and ONNX Runtime (same weights, same machine)")
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
    parser.add_argument("--only", default="",
                        help="comma-separated scenario names (e.g. translate_sentence): a quick partial run; "
                             "sides serving none of them are not started")
    parser.add_argument("--previous", type=pathlib.Path,
                        help="summary.json of the run to compare with (default: the one in --out)")
    args = parser.parse_args()
    summary = run(args)
    failed = [e for e in summary["results"] if e["ok"] != e["requests"]]
    if failed:
        print(f"{len(failed)} runs had failed requests", file=sys.stderr)
        sys.exit(1)
    # A full-precision peer that answers differently from transformers on the same weights is
    # converted or driven wrongly, and its speed means nothing.
    wrong = [r for r in summary["agreement"] if r["side"] in FULL_PRECISION_PEERS and not r["same_as_transformers"]]
    if wrong:
        print("full-precision peers disagree with transformers: " + ", ".join(
            f"{r['side']} on {r['scenario']}" for r in wrong), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
