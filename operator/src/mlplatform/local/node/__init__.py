"""The local node: a kubelet for one machine that runs the pods bound to it as host processes.

Each pod gets its own network, UTS and mount namespaces (held by a small *sandbox* process, the way a
pause container holds them), an IP on the node bridge, and a root filesystem that overlays the host's
read-only view with pod-private writes. Each container runs under a *shim* process that records its
exit status and logs, so the node agent can restart or crash without losing track of any container.
"""
