"""The queue service's HTTP front end: the protocol of the cloud's queue service, so `eas_prediction.QueueClient`
works unchanged against `/api/predict/<name>` (input queue) and `/api/predict/<name>/sink` (output queue).

Choices, where the SDK leaves the server's behaviour open:
- Input queue: a put goes through `JobClient.put` (taskType routing, `_priority_`, request state), which also
  mirrors the request (data, tags) into a Redis Stream of the front end under id `<index>-0`; the worker removes
  it with the request's final output entry (atomically). Reads, watches and `stream.length` see the requests that
  are queued or running; `search` reads the request's state (position in its Celery queue, progress, worker,
  done/failed/cancelled) even after it left. Taking an item off the input queue withdraws the request: it is
  flagged for cancellation, so a queued one never runs and a running command is stopped.
- Output queue: a Redis Stream per service and front end (`<service>/sink` for the front end named like the
  service, `<service>/<front end>/sink` for the others); results carry the handler's body as `data`.
- Watch: the SDK's uid/gid headers are a Redis consumer and consumer group; `window` bounds what a consumer holds
  uncommitted; what a vanished consumer held is sent again, to it or to another watcher of its group.
- Binding and isolation: each front end has its own name, queues and token; each request records its front end,
  which travels in the task (its `frontend` argument), so the worker writes its results and logs to that front
  end's output queue without asking Redis.
- Auth: the `Authorization` header holds the front end's token; Redis keeps only its keyed hash, compared in
  constant time. Scopes: each front end may submit the task types the config's `security.frontends` gives it.
- Limits: a connection's head size and time, body size and pace, idle time, and the number of connections and
  watchers are bounded (the config's `security.http`); long walks inside Redis run in bounded script steps.

Modules: protocol (protobuf, pure), params (query parameters, pure), auth, binding, queues (Redis side), tag_scan
and positions (bounded walks), status (attributes, search), watch (websocket sessions), app (routes), server
(uvicorn, with the connection limits of scalablejob.upstream.uvicorn_internals). Its command is in
scalablejob.cli.frontend.
"""
