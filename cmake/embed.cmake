# embed.cmake - the web UI's files as C byte arrays, so the binary serves them with no files beside it.
#
#   cmake -DBASE=DIR -DFILES="a.html;b.js" -DOUT=ui_files.c -P embed.cmake
#
# Writes OUT with `const ag_ui_file ag_ui_files[]` (name, bytes, length) and `ag_ui_n_files`, in FILES order;
# each array ends in a NUL that the length leaves out, so a C compiler never sees an empty initializer.
set(src "/* Made by cmake/embed.cmake from ${BASE}: edit the files there, not this. */\n")
string(APPEND src "#include \"server/ui_files.h\"\n\n")
set(table "")
set(i 0)
foreach(f IN LISTS FILES)
  file(READ "${BASE}/${f}" hex HEX)
  string(LENGTH "${hex}" digits)
  math(EXPR len "${digits} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){24})" "\\1\n    " bytes "${bytes}")
  string(APPEND src "static const unsigned char file${i}[] = {\n    ${bytes}0x00};\n")
  string(APPEND table "    {\"${f}\", file${i}, ${len}},\n")
  math(EXPR i "${i} + 1")
endforeach()
string(APPEND src "\nconst ag_ui_file ag_ui_files[] = {\n${table}};\nconst size_t ag_ui_n_files = ${i};\n")
file(WRITE "${OUT}.tmp" "${src}")
file(RENAME "${OUT}.tmp" "${OUT}")
