#!/bin/bash
# Env script of the zookeeper parcel (meta/zookeeper_env.sh). Drover reads it without a shell:
# only `export NAME=VALUE` lines (docs/parcels.md). JAVA_HOME and PATH to java come from the
# jre parcel's env script.
export ZOOKEEPER_HOME="$PARCELS_ROOT/$PARCEL_DIRNAME"
export ZOOKEEPER_CLASSPATH="$ZOOKEEPER_HOME/usr/share/java/zookeeper.jar:$ZOOKEEPER_HOME/usr/share/java/slf4j-log4j12.jar:$ZOOKEEPER_HOME/usr/share/java/log4j-1.2.jar"
