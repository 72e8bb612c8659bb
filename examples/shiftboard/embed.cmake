# Turns dashboard.html into a C string, so the binary serves it with no
# files beside it.  cmake -DIN=dashboard.html -DOUT=dashboard.c -P embed.cmake
file(READ ${IN} html HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${html}")
file(WRITE ${OUT} "/* Generated from dashboard.html by embed.cmake. */\n"
  "#include \"shiftboard.h\"\n"
  "const char sb_dashboard_html[] = {${bytes} 0x00};\n")
