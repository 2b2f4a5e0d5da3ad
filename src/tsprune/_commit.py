"""The git commit of this source tree when it was exported with ``git archive`` (``.gitattributes`` marks this file
``export-subst``, so git writes the commit into the string). In a git checkout the string stays unsubstituted and
``sweep.tasks.git_revision`` asks git instead."""

COMMIT = "$Format:%H$"
