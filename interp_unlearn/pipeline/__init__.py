"""The top floor: the only code that loads models by name, writes run directories and draws
figures -- the command line (``cli``), the stage runners (``localize_run``,
``unlearn_command``, ``organism``, ``presets``) and the paper's grid (``reproduce``)."""
