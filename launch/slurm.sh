#!/usr/bin/env bash
# Multi-node training under SLURM: one `accelerate launch` per node, DeepSpeed ZeRO-2 across all GPUs.
#
#   sbatch --nodes=2 launch/slurm.sh configs/demo.yaml data.train='/data/cc3m/{00000..00331}.tar' ...
#
# Preemption, and the time it takes. SLURM sends SIGTERM to each node's `accelerate launch` (torchrun's
# agent) 120 s before the time limit (--signal below). The agent forwards it to its workers and kills
# them TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds later (torch's default: 30; set to 100 below). A worker
# acts on the signal at the ranks' next agreement, at most train.agree_every steps later, then writes
# a checkpoint and exits 0. So:  agree_every x step time + one save  <  100 s  <  120 s  (the 20 s
# left cover the signal's delivery and the agent's own exit). ViT-B/32 on 64 H200s: 10 x 30-60 ms of
# steps + a 2.1 GB save, about 3-7 s (docs/scaling.md). The requeued job continues with train.resume=latest (set below).
#
# VLP_LAUNCH_CONFIG chooses the accelerate config (default: launch/accelerate/multinode_zero2.yaml;
# tests/test_launch.py runs this script with the CPU copy under a fake srun, GPUS_PER_NODE=1).
#SBATCH --job-name=vlp
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --output=slurm-%j.out
set -euo pipefail

RECIPE=${1:?usage: sbatch launch/slurm.sh configs/RECIPE.yaml [key=value ...]}
shift
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
# sed reads the whole list (head would exit early, and scontrol die of SIGPIPE under pipefail)
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)
MASTER_PORT=${MASTER_PORT:-29500}
LAUNCH_CONFIG=${VLP_LAUNCH_CONFIG:-launch/accelerate/multinode_zero2.yaml}
# The workers' grace period after a SIGTERM (see above); must stay below the --signal lead time.
TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-100}

export MASTER_ADDR MASTER_PORT GPUS_PER_NODE LAUNCH_CONFIG TORCH_ELASTIC_SHUTDOWN_TIMEOUT
# The recipe and overrides reach the node's shell as its arguments ("$0", "$@"), never re-split or
# re-expanded: an override such as "objective.terms={clip: 1.0}" stays one word.
srun --kill-on-bad-exit=1 bash -c 'exec accelerate launch \
    --config_file "$LAUNCH_CONFIG" \
    --num_machines "$SLURM_NNODES" \
    --num_processes "$((SLURM_NNODES * GPUS_PER_NODE))" \
    --machine_rank "$SLURM_NODEID" \
    --main_process_ip "$MASTER_ADDR" \
    --main_process_port "$MASTER_PORT" \
    -m vlp.train --config "$0" train.resume=latest "$@"' "$RECIPE" "$@"
