#!/bin/bash
# Env script of the zookeeper parcel (meta/zookeeper_env.sh). Drover reads it without a shell:
# only `export NAME=VALUE` lines (docs/parcels.md). JAVA_HOME and PATH to java come from the
# jre parcel's env script.
export ZOOKEEPER_HOME="$PARCELS_ROOT/$PARCEL_DIRNAME"
# Every jar the server loads, from this parcel. Debian's zookeeper.jar names its dependencies
# in its manifest's Class-Path with absolute /usr/share/java/ paths, i.e. the host's files, so
# they are listed here (zookeeper.jar's Class-Path without jline, which only the CLI uses, plus
# the log4j binding), with zookeeper.jar last: java searches a jar's Class-Path right after
# the jar, so the host's copies (where a host has them) come after every jar of the parcel.
# java reads CLASSPATH when it is given no -cp. $PARCEL_DIRNAME is the versioned directory, so
# a running server keeps its jars when another version is activated.
export CLASSPATH="$ZOOKEEPER_HOME/usr/share/java/slf4j-log4j12.jar:$ZOOKEEPER_HOME/usr/share/java/log4j-1.2.jar:$ZOOKEEPER_HOME/usr/share/java/commons-cli.jar:$ZOOKEEPER_HOME/usr/share/java/commons-io.jar:$ZOOKEEPER_HOME/usr/share/java/findbugs-annotations.jar:$ZOOKEEPER_HOME/usr/share/java/jackson-annotations.jar:$ZOOKEEPER_HOME/usr/share/java/jackson-core.jar:$ZOOKEEPER_HOME/usr/share/java/jackson-databind.jar:$ZOOKEEPER_HOME/usr/share/java/jetty9-client.jar:$ZOOKEEPER_HOME/usr/share/java/jetty9-http.jar:$ZOOKEEPER_HOME/usr/share/java/jetty9-io.jar:$ZOOKEEPER_HOME/usr/share/java/jetty9-security.jar:$ZOOKEEPER_HOME/usr/share/java/jetty9-server.jar:$ZOOKEEPER_HOME/usr/share/java/jetty9-servlet.jar:$ZOOKEEPER_HOME/usr/share/java/jetty9-util.jar:$ZOOKEEPER_HOME/usr/share/java/metrics-core.jar:$ZOOKEEPER_HOME/usr/share/java/netty-buffer.jar:$ZOOKEEPER_HOME/usr/share/java/netty-common.jar:$ZOOKEEPER_HOME/usr/share/java/netty-handler.jar:$ZOOKEEPER_HOME/usr/share/java/netty-transport.jar:$ZOOKEEPER_HOME/usr/share/java/netty-transport-native-epoll.jar:$ZOOKEEPER_HOME/usr/share/java/slf4j-api.jar:$ZOOKEEPER_HOME/usr/share/java/snappy-java.jar:$ZOOKEEPER_HOME/usr/share/java/zookeeper-jute.jar:$ZOOKEEPER_HOME/usr/share/java/zookeeper.jar"
export ZOOKEEPER_CLASSPATH="$CLASSPATH"
