"""Gathers concurrent requests into one call of a batched engine.

CTranslate2 and ONNX Runtime are fastest when many inputs share one call
(`generate_batch`, `translate_batch`, a padded `session.run`). A request
awaits `submit(item)`; one background task takes the first waiting item,
waits up to `wait_ms` for more (at most `max_items`), runs `run_batch(items)`
on a single worker thread (so calls never overlap and each gets every intra-op
thread), and hands each request its own result. While a batch runs, the next
one queues up.
"""

import asyncio
import concurrent.futures
import time


class Batcher:
    def __init__(self, run_batch, max_items=16, wait_ms=3.0):
        self.run_batch = run_batch
        self.max_items = max_items
        self.wait = wait_ms / 1000
        self.queue = None
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    async def submit(self, item):
        if self.queue is None:  # created on the server's event loop, at the first request
            self.queue = asyncio.Queue()
            asyncio.get_running_loop().create_task(self._loop())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((item, future))
        return await future

    async def _loop(self):
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = time.monotonic() + self.wait
            while len(batch) < self.max_items:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            while len(batch) < self.max_items and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            items = [item for item, _ in batch]
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch, items)
            except Exception as error:  # every waiting request learns of it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
