#!/bin/sh
# Run by the understudy-agent package before it is removed (not upgraded): names the
# workloads still running on this host, each in its own systemd scope, and says what
# becomes of them once the agent is gone. It changes nothing.
scopes=$(systemctl list-units --type=scope --state=running --no-legend --plain 'understudy-*.scope' 2>/dev/null |
    awk '{print $1}' | sed -e 's/^understudy-//' -e 's/\.scope$//' | tr '\n' ' ')
[ -n "$scopes" ] || exit 0
cat >&2 <<MSG
understudy-agent: WARNING: workloads still run on this host: $scopes
  They keep running, but with the agent gone nothing checkpoints them: they are
  unprotected. The coordinator records the agent's departure in its events
  (understudy events) and shows them unprotected (understudy workload list). If
  no agent comes back, their leases run out after failover.fence_after and they
  freeze; the coordinator then restores them on their shadows (docs/failover.md).
  To move them first, reinstall the agent and run: understudy drain $(hostname)
MSG
