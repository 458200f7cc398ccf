# -*- coding: utf-8 -*-
# Copyright: (c) 2024, yunpeng.es_serverless contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs the es_gitlab_pull module in the controller process (see plugin_utils/in_process.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type  # noqa: UP001

from ansible_collections.yunpeng.es_serverless.plugins.modules import es_gitlab_pull
from ansible_collections.yunpeng.es_serverless.plugins.plugin_utils.in_process import InProcessAction


class ActionModule(InProcessAction):
    MODULE = es_gitlab_pull
