#!/usr/bin/env bash
# Multi-node training under SLURM: one `accelerate launch` per node, DeepSpeed ZeRO-2 across all GPUs.
#
#   sbatch --nodes=2 launch/slurm.sh configs/demo.yaml data.train='/data/cc3m/{00000..00331}.tar' ...
#
# Preemption: SLURM sends SIGTERM before killing the job; vlp saves a checkpoint at the next step
# boundary and exits, and the requeued job continues with train.resume=latest (set below).
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

export MASTER_ADDR MASTER_PORT GPUS_PER_NODE
# The recipe and overrides reach the node's shell as its arguments ("$0", "$@"), never re-split or
# re-expanded: an override such as "objective.terms={clip: 1.0}" stays one word.
srun --kill-on-bad-exit=1 bash -c 'exec accelerate launch \
    --config_file launch/accelerate/multinode_zero2.yaml \
    --num_machines "$SLURM_NNODES" \
    --num_processes "$((SLURM_NNODES * GPUS_PER_NODE))" \
    --machine_rank "$SLURM_NODEID" \
    --main_process_ip "$MASTER_ADDR" \
    --main_process_port "$MASTER_PORT" \
    -m vlp.train --config "$0" train.resume=latest "$@"' "$RECIPE" "$@"
