#!/usr/bin/env bash
# Removes every test network (tests/support/netns.rs): namespaces orch-<id>-<i>, bridges
# ob<id>, veth ends oh<id><i>/oa<id><i> and their state files in /tmp/orch-netns. Each test removes its own on drop, and
# a later Net::new removes those of dead processes; this is for the rest. Run it (as
# root) when no tests run: it cuts live ones off.
set -euo pipefail
for ns in $(ip netns list | awk '{print $1}' | grep -E '^orch-[0-9a-f]{6}-[0-9]+$' || true); do
  echo "deleting namespace $ns"
  ip netns del "$ns"
done
# The veth pairs by their root-namespace ends: a deleted namespace lives on (with its
# links) while a socket made in it does.
for link in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^o[ha][0-9a-f]{6}[0-9]+$' || true); do
  echo "deleting link $link"
  ip link del "$link" 2>/dev/null || true
done
for br in $(ip -o link show type bridge | awk -F': ' '{print $2}' | grep -E '^ob[0-9a-f]{6}$' || true); do
  echo "deleting bridge $br"
  ip link del "$br"
done
rm -f /tmp/orch-netns/[0-9a-f]*
