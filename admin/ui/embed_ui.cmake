# Writes OUTPUT, a C++ file defining mailtap::admin::ui_files(): each file named in FILES (a
# comma-separated list of names in DIR) with its bytes, embedded at build time the way
# admin/embed.cmake embeds openapi.json (cmake -DDIR=... -DFILES=a,b -DOUTPUT=... -P).
string(REPLACE "," ";" names "${FILES}")
set(arrays "")
set(table "")
set(i 0)
foreach(name IN LISTS names)
  file(READ "${DIR}/${name}" hex HEX)
  if(hex STREQUAL "")
    message(FATAL_ERROR "admin/ui/${name} is empty")
  endif()
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," bytes "${hex}")
  string(APPEND arrays "constexpr char file${i}[] = {${bytes}};\n")
  string(APPEND table "    ui_file{\"${name}\", {file${i}, sizeof file${i}}},\n")
  math(EXPR i "${i} + 1")
endforeach()
file(WRITE "${OUTPUT}.tmp"
  "// Generated from admin/ui/ by admin/ui/embed_ui.cmake: do not edit.\n"
  "#include \"admin/ui_assets.hpp\"\n"
  "namespace mailtap::admin {\n"
  "namespace {\n${arrays}"
  "constexpr ui_file files[] = {\n${table}};\n"
  "}  // namespace\n"
  "std::span<const ui_file> ui_files() { return files; }\n"
  "}  // namespace mailtap::admin\n")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
