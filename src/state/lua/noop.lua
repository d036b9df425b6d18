-- placeholder: keeps the embedded table non-empty until scripts move here
return 0
