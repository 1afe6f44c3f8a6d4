"""The training run behind ``train.py``, in the order a job goes through it.

``job.run_job`` (Hydra's task: exit policy and failure records) types the config (``settings``) and
calls ``training.train``, the outline read top to bottom. ``train`` builds the run's parts
(``build``: data, model, optimiser and schedule), takes the run directory and resumes its checkpoint
(``state``), runs the step loop (``loop``), evaluates (``evaluation``) and writes the records
(``records``).

Layers, top to bottom: job, training, records, loop, state, build, model, settings, optim, evaluation,
hardware, distributed, preemption (signals), hooks (an optional debug hook into the loop) and
debug_faults (loaded by hooks only when its variable is set). Each module imports only modules below it.
"""
