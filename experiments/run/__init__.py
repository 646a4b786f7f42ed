"""A training run: building it (``setup``), stepping it (``loop``), what it reports
(``reports``, ``eval``, ``metrics``, ``progress``, ``logging``), keeping it (``checkpoint``,
``compat``, ``logdir``, ``signals``, ``pause``) and scaling it out (``scale``, ``seeds``)."""
