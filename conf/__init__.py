"""The config tree. In an installed package it is makemore.conf, a package so that Hydra finds it at pkg://makemore.conf."""
