"""nbgrader settings for a course made from the vae-notebooks: copy this file to the course's root folder.

Grade in fast mode (tiny data, one epoch): check cells never depend on how well a model trained.
See course/README.md for the steps and for what nbgrader's warnings mean here.
"""

import os

c = get_config()  # noqa: F821 - provided by nbgrader when it reads this file

c.CourseDirectory.course_id = "vae-notebooks"

# The grading kernel: the python3 kernel of the environment that runs nbgrader, which must have the
# vae_helpers package installed and the MNIST cache (VAE_DATA_DIR) readable.
os.environ.setdefault("VAE_FAST", "1")  # `VAE_FAST=0 nbgrader autograde ...` grades in full mode
c.Execute.kernel_name = "python3"
c.Execute.extra_arguments = ["--HistoryManager.hist_file=:memory:"]

# nbgrader's default of 30 s per cell interrupts training cells (KeyboardInterrupt, then NameErrors
# downstream). The slowest fast-mode cell takes a few seconds and the slowest full-mode cell about
# 4 minutes on a 2-core CPU, so 1800 s fits both with room for a slow or busy grading machine.
c.Execute.timeout = 1800
c.Execute.interrupt_on_timeout = True

# A check cell the student deleted is put back (and fails without a solution) instead of becoming
# "needs manual grade".
c.OverwriteCells.add_missing_cells = True

# The stubs the student versions get (the same as `make student`).
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Feedback without the hidden tests: nbgrader's feedback shows the autograded notebook, hidden
# tests included, unless they are cleared again here.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
