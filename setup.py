"""Reads the version and description from settings.ini, the project's single source for them."""
from configparser import ConfigParser

from setuptools import setup

cfg = ConfigParser()
cfg.read("settings.ini")
setup(version=cfg["DEFAULT"]["version"], description=cfg["DEFAULT"]["description"])
