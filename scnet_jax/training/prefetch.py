"""Host batches built and copied to the devices in a background thread,
`depth` batches ahead of the step that uses them (big_vision's
prefetch-to-device), so decoding, transforms and the host-to-device copy
overlap the running step."""
import queue
import threading

_END = object()


class _Failure:
  def __init__(self, error):
    self.error = error


class DevicePrefetch:
  """Iterator of `prepare(host_batch)` for every batch of `batches`.

  prepare: host batch -> (device inputs, host-side extras); runs in the
  thread (jax.device_put releases the GIL while it copies).
  An exception in the thread is raised by the next `next()`.
  """

  def __init__(self, batches, prepare, depth=2):
    self._queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run,
                                    args=(batches, prepare), daemon=True)
    self._thread.start()

  def _put(self, item):
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def _run(self, batches, prepare):
    try:
      for batch in batches:
        if not self._put(prepare(batch)):
          return
    except BaseException as e:  # handed to the consumer
      self._put(_Failure(e))
      return
    self._put(_END)

  def __iter__(self):
    return self

  def __next__(self):
    item = self._queue.get()
    if item is _END:
      raise StopIteration
    if isinstance(item, _Failure):
      raise item.error
    return item

  def close(self):
    self._stop.set()
    self._thread.join(timeout=5)
