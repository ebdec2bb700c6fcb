#!/bin/sh
# Patroni's post_bootstrap hook (deploy/ha/patroni.yml): runs once, as postgres, on
# the node that initialised the cluster, with a connection string to it as $1.
# Creates voucherd's database; `voucherd migrate` creates the tables.
set -eu
psql -d "$1" -v ON_ERROR_STOP=1 -qc 'CREATE DATABASE voucherd'
