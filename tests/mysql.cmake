# MariaDB: the throwaway server fixture and the MariaDB-only tests.
# Included by tests/CMakeLists.txt when DBSCOPE_WITH_MYSQL is on;
# DBSCOPE_MYSQL_DIR is the server's directory for this build.

add_test(NAME mysql_start
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/mysql_server.sh start ${DBSCOPE_MYSQL_DIR})
set_tests_properties(mysql_start PROPERTIES FIXTURES_SETUP mysql_server
  LABELS mysql TIMEOUT 120)
add_test(NAME mysql_stop
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/mysql_server.sh stop ${DBSCOPE_MYSQL_DIR})
set_tests_properties(mysql_stop PROPERTIES FIXTURES_CLEANUP mysql_server
  LABELS mysql TIMEOUT 60)
