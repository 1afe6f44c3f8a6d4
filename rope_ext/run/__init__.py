"""The training run behind ``train.py``, in the order a job goes through it.

``job.run_job`` (Hydra's task: exit policy and failure records) types the config (``settings``) and
calls ``training.train``, the outline read top to bottom. ``train`` builds the run's parts
(``build``: data, model, optimiser and schedule), takes the run directory and resumes its checkpoint
(``state``), runs the step loop (``loop``), evaluates (``evaluation``) and writes the records
(``records``). Below them: ``model``, ``optim``, ``hardware``, ``distributed``, ``preemption`` (signals)
and ``hooks`` (an optional debug hook into the loop, ``debug_faults``). Each module imports only the
ones after it in this list, never the other way round.
"""
