#!/usr/bin/env bash
# System packages the test suite needs beyond Python: Debian's slurm-wlm and
# munge, for the one-node SLURM cluster the slurm executor's tests start
# (tests/grid/slurm_cluster.py), and wordnet-base, the WordNet data METEOR
# reads (metrics.meteor_dtvg; no PyPI package ships it). Installs only what is missing; run as root.
# Measured on Debian 12: about 15 s with a warm apt mirror, up to a minute cold.
set -euo pipefail

need=()
command -v sbatch >/dev/null 2>&1 && [[ -x /usr/sbin/slurmctld && -x /usr/sbin/slurmd ]] || need+=(slurm-wlm)
[[ -x /usr/sbin/munged ]] || need+=(munge)
[[ -d /usr/share/wordnet ]] || need+=(wordnet-base)
if [[ ${#need[@]} -eq 0 ]]; then
  echo "ci_system_packages: slurm-wlm, munge and wordnet-base present"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "ci_system_packages: need root to install ${need[*]}; the SLURM tests will skip" >&2
  exit 0
fi
start=$(date +%s)
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "ci_system_packages: installed ${need[*]} in $(( $(date +%s) - start )) s"
