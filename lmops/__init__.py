from lmops.warnfilters import install as _install_warning_filters

_install_warning_filters()  # known-harmless library warnings, silenced in one place (lmops/warnfilters.py)
