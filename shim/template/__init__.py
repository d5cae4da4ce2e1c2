"""The node-wide warm template: one pre-imported process that every per-container exec forks from.

Which code runs in which process:

- ``client``: runs in the ``containerd-shim-runwasm-v1`` launcher containerd execs for each
  ``start``/``delete``/``-info`` (``python -IS``, stdlib C modules only). It forwards the
  request (argv, cwd, umask, environment, fds 0-2) to the template and exits with the code the
  template's child reports; if no usable template answers it returns None and the launcher runs
  the action itself, as before, and (for ``start``) launches a template for the next container.
- ``process``: the template (action ``_runwasm_template``). Single-threaded: it imports asyncio,
  wasmtime and every server/workload module once, ``gc.freeze()``s, then accepts connections
  and forks one child per request. The child runs the action with the caller's stdio, cwd and
  environment; a ``start`` child has the template fork the group's server (``server``; the
  child forks it itself when the template cannot be asked), so the server and its zygote
  share the template's code and heap pages copy-on-write.
- ``server``: that fork: detach (double fork, ``setsid``, /dev/null stdio), take the caller's
  environment, umask and command line, then run ``server_main.serve_main`` as an exec'd
  server would.
- ``key``: where the template's socket lives and the identity a template must match.
"""

# True in a child of the template running an action: ``start`` then forks the server instead
# of exec'ing one (``server.fork_server``).
in_template_child = False
