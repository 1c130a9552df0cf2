"""The plugin machinery: hook specifications, the registry and its loading, params, component specs and contracts.

Plugin authors import from :mod:`sharedattr.plugin`, the one public module that gathers what they need.
"""
