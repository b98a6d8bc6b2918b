"""The parts of ``benchmarks/gpu_check.py``, one job a module: its options, the plan of configurations,
the device's peak and the model's FLOPs, the corpus, the two trainers' runs and the report. The script
puts this folder's parent on ``sys.path`` and imports them; run the script, not these.
"""
