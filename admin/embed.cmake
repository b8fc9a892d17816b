# Writes OUTPUT, a C++ file defining `std::string_view NAME()` that returns the bytes of INPUT
# (a file embedded at build time: cmake -DINPUT=... -DOUTPUT=... -DNAME=... -DNAMESPACE=... -P).
file(READ "${INPUT}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," bytes "${hex}")
file(WRITE "${OUTPUT}.tmp"
  "// Generated from ${INPUT} by admin/embed.cmake: do not edit.\n"
  "#include <string_view>\n"
  "namespace ${NAMESPACE} {\n"
  "namespace { constexpr char bytes[] = {${bytes}}; }\n"
  "std::string_view ${NAME}() { return {bytes, sizeof bytes}; }\n"
  "}\n")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
