"""The lab: the measurements and studies behind the figures in docs/, run from a checkout as
`python -m lab.<name>` (or `bash lab/<name>.sh`). Not part of the installed package: users train,
evaluate, serve and export through `experiments/`; these scripts only measure the zoo."""
