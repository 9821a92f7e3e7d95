"""OpenAI's official Python client against the running server.

Starts ./target/release/nlp-serve with the tiny models and an API key on a free
port, then calls it through `openai.OpenAI(base_url=..., api_key=...)`: models,
completions (greedy answers equal the native POST /complete), lists of prompts
with n choices, stop sequences, streaming (chunks add up to the answer, usage
chunk), and errors raised as the client's own exception classes.

    build/openai-venv/bin/python tests/openai/check.py   (make openai-check)
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import openai

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEY = "sk-test-openai-check"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port, workdir):
    env = dict(
        os.environ,
        PORT=str(port),
        NLP_SERVE__SERVER__HOST="127.0.0.1",
        NLP_SERVE__LOGGING__LEVEL="warn",
        NLP_SERVE__AUTH__API_KEYS=KEY,
        NLP_SERVE__DOCUMENTS__DATABASE=os.path.join(workdir, "documents.sqlite"),
    )
    log = open(os.path.join(workdir, "nlp-serve.log"), "w")
    server = subprocess.Popen(
        [os.path.join(ROOT, "target/release/nlp-serve"), "--profile", "tiny"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server exited with {server.returncode}; log in {log.name}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2):
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    sys.exit("the server did not become ready in 120 s")


def native_complete(port, body):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/complete", data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def check(condition, message):
    if not condition:
        raise AssertionError(message)
    print(f"ok   {message}")


def expect_error(error_class, call, message):
    try:
        call()
    except error_class as error:
        check(True, f"{message}: {error_class.__name__} ({error.status_code})")
        return error
    raise AssertionError(f"{message}: no {error_class.__name__} raised")


def run(port):
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)

    models = client.models.list()
    ids = [model.id for model in models.data]
    check(len(ids) == 1, f"models.list() names the served model: {ids}")
    served = ids[0]
    check(client.models.retrieve(served).id == served, "models.retrieve() finds it")

    prompt = "Machine learning is"
    native = native_complete(port, {"prompt": prompt, "max_new_tokens": 16, "temperature": 0})
    answer = client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt=prompt, max_tokens=16, temperature=0,
        user="openai-check")
    check(answer.object == "text_completion" and answer.id.startswith("cmpl-"),
          "completions.create() parses into the client's Completion type")
    check(answer.model == served, "the served model's name is reported")
    check(answer.choices[0].text == native["completions"][0]["text"],
          f"greedy text equals POST /complete's: {answer.choices[0].text!r}")
    check(answer.choices[0].finish_reason in ("stop", "length"), "finish_reason is stop or length")
    usage = answer.usage
    check(usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0,
          f"usage adds up: {usage}")

    many = client.completions.create(
        model=served, prompt=["First prompt", "Second prompt"], n=2, max_tokens=8,
        temperature=0.9, seed=7)
    check([choice.index for choice in many.choices] == [0, 1, 2, 3],
          "two prompts with n=2 give choices 0..3")
    echoed = client.completions.create(
        model=served, prompt=["First prompt", "Second prompt"], n=2, max_tokens=4,
        temperature=0.9, seed=7, echo=True)
    check(all(choice.text.startswith(["First prompt", "Second prompt"][choice.index // 2])
              for choice in echoed.choices),
          "choices 0-1 answer the first prompt, 2-3 the second")

    text = answer.choices[0].text
    # The first two characters of the answer that occur there for the first time
    # (past its start), so the stop leaves a non-empty text.
    start = next(k for k in range(1, len(text) - 1) if text.find(text[k:k + 2]) == k)
    stop = text[start:start + 2]
    stopped = client.completions.create(
        model=served, prompt=prompt, max_tokens=16, temperature=0, stop=[stop])
    check(stopped.choices[0].finish_reason == "stop" and stopped.choices[0].text == text[:start],
          f"stop={stop!r} cuts the text: {stopped.choices[0].text!r}")

    pieces, finish, usage_chunks = {}, {}, []
    stream = client.completions.create(
        model=served, prompt=prompt, max_tokens=16, temperature=0, stream=True,
        stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            usage_chunks.append(chunk.usage)
        for choice in chunk.choices:
            pieces[choice.index] = pieces.get(choice.index, "") + choice.text
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    check(pieces.get(0) == text, f"streamed chunks add up to the answer ({len(text)} chars)")
    check(finish.get(0) == answer.choices[0].finish_reason, "the last chunk carries finish_reason")
    check(len(usage_chunks) == 1 and usage_chunks[0].total_tokens == usage.total_tokens,
          "include_usage sends one usage chunk")

    expect_error(openai.UnprocessableEntityError,
                 lambda: client.completions.create(model=served, prompt=prompt, max_tokens=100000),
                 "max_tokens past the limit")
    error = expect_error(
        openai.UnprocessableEntityError,
        lambda: client.completions.create(model=served, prompt=prompt, logprobs=2),
        "logprobs (not available)")
    check(error.body.get("param") == "logprobs", f"the error names its param: {error.body}")
    wrong_key = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-wrong",
                              max_retries=0)
    error = expect_error(openai.AuthenticationError,
                         lambda: wrong_key.completions.create(model=served, prompt=prompt),
                         "a wrong API key")
    check(error.body.get("type") == "authentication_error", f"in OpenAI's shape: {error.body}")
    error = expect_error(openai.NotFoundError, lambda: client.models.retrieve("not-served"),
                         "an unknown model id")
    check(error.body.get("code") == "model_not_found", f"in OpenAI's shape: {error.body}")


def main():
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        server = start_server(port, workdir)
        try:
            run(port)
        except Exception:
            with open(os.path.join(workdir, "nlp-serve.log")) as log:
                sys.stderr.write(log.read()[-4000:])
            raise
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"openai-check: the official client (openai {openai.__version__}) works against nlp-serve")


if __name__ == "__main__":
    main()
