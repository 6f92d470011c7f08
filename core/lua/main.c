/*
 * main.c -- the retort command.
 *
 *   retort run FILE [ARGS...]   run a Lua recipe (ARGS reach it as `arg`)
 *   retort plugins [NAME]       list plugins, or one plugin's options
 *   retort --version | --help
 *
 * Recipes run under lua_pcall with a traceback handler (as lua.c does), so
 * an error prints file:line and the stack, and the command exits 1.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "retort.h"

int luaopen_retort(lua_State *L);

static const char *usage =
    "usage: retort COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  run FILE [ARGS...]         run a Lua recipe; ARGS reach it as the table `arg`\n"
    "  plugins [NAME]             list the plugins, or show one plugin's options\n"
    "%s"
    "  --version                  print the version, the plugin ABI and the BLAS core\n"
    "  --help                     this text\n"
    "\n"
    "environment:\n"
    "  RETORT_PLUGIN_PATH         ':'-separated absolute folders searched for plugins\n"
    "                             after the built-in folder; files and folders that\n"
    "                             other users can write are refused\n"
    "  RETORT_QUIET=1             no progress bars or periodic progress lines\n"
    "\n"
    "example:\n"
    "  retort run scripts/recipes/fashion_mnist.lua --epochs 2\n";

/* Pushes msg and the stack traceback without the library's frames: the
 * error machinery and library functions ("[C]: in function 'error'",
 * "scripts/retort/util.lua:26: in field 'rethrow'") above the user's
 * first frame, and library frames below it, are noise to a recipe's
 * author: the message already points at the recipe's line.  A message
 * positioned in the library itself is a library bug: its traceback is
 * kept whole. */
static void push_traceback(lua_State *L, const char *msg)
{
    luaL_traceback(L, L, msg, 1);
    if (!strncmp(msg, "scripts/retort/", 15)) return;
    const char *tb = lua_tostring(L, -1);
    const char *head = "\nstack traceback:";
    if (strncmp(tb + strlen(msg), head, strlen(head))) return;
    const char *p = tb + strlen(msg) + strlen(head);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, tb, (size_t)(p - tb));
    int user = 0, dropped = 0;
    while (*p == '\n') {
        const char *e = strchr(p + 1, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        const char *line = p + 2; /* after "\n\t" */
        int lib = !strncmp(line, "scripts/retort/", 15);
        int c = !strncmp(line, "[C]:", 4);
        int tail = !strncmp(line, "(...tail calls...)", 18);
        if (lib || (!user && (c || tail)) || (tail && dropped)) {
            dropped = 1;
        } else {
            luaL_addlstring(&b, p, len);
            user = 1;
            dropped = 0;
        }
        p += len;
    }
    luaL_pushresult(&b);
    lua_remove(L, -2);
}

/* The message handler: adds a traceback (lua.c's msghandler). */
static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    push_traceback(L, msg);
    return 1;
}

/* A Lua state with the standard libraries, where require "retort" finds
 * the built-in module first.  NULL on OOM (message printed). */
static lua_State *new_state(void)
{
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "retort: cannot create a Lua state (out of memory)\n");
        return NULL;
    }
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_retort);
    lua_setfield(L, -2, "retort");
    lua_pop(L, 1);
    return L;
}

/* Calls the function below the nargs arguments at the top in protected
 * mode.  Recipes (trace != NULL) get a traceback, since their errors are in
 * the user's code; commands print "retort NAME: message" with the library's
 * own position removed.  Returns the exit status: 1 on error, else
 * (want_status) an integer result, else 0. */
static int call_protected(lua_State *L, int nargs, int want_status, const char *command)
{
    int base = lua_gettop(L) - nargs; /* the function */
    if (!command) {
        lua_pushcfunction(L, msghandler);
        lua_insert(L, base);
    }
    int status = lua_pcall(L, nargs, 1, command ? 0 : base);
    int rc = status == LUA_OK ? 0 : 1;
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (!msg) msg = "(error without a message)";
        fflush(stdout);
        if (command) {
            /* "scripts/retort/cmd_eval.lua:44: " says nothing to a user */
            const char *p = strstr(msg, ".lua:");
            if (p && !strncmp(msg, "scripts/retort/", 15)) {
                p += 5;
                while (*p >= '0' && *p <= '9') p++;
                if (p[0] == ':' && p[1] == ' ') msg = p + 2;
            }
            /* "retort report: report: ..." or "retort eval: rt.evaluate:
             * ...": the command's name is said once; a library function's
             * name means nothing to someone who typed a command. */
            size_t n = strlen(command);
            if (!strncmp(msg, command, n) && !strncmp(msg + n, ": ", 2)) msg += n + 2;
            else if (!strncmp(msg, "rt.", 3)) {
                const char *q = msg + 3;
                while ((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '_' || *q == '.') q++;
                if (q[0] == ':' && q[1] == ' ') msg = q + 2;
            }
            fprintf(stderr, "retort %s: %s\n", command, msg);
        } else {
            fprintf(stderr, "retort: %s\n", msg);
        }
    } else if (want_status && lua_isinteger(L, -1)) {
        rc = (int)lua_tointeger(L, -1);
    }
    lua_settop(L, base - 1);
    return rc;
}

/* The help text, with the Lua commands' lines. */
static void print_usage(FILE *f)
{
    const char *lines = "";
    lua_State *L = new_state();
    if (L) {
        lua_getglobal(L, "require");
        lua_pushliteral(L, "retort");
        if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
            lua_getfield(L, -1, "command_list");
            if (lua_pcall(L, 0, 1, 0) == LUA_OK && lua_isstring(L, -1) && lua_rawlen(L, -1) > 0) {
                lua_pushliteral(L, "\n");
                lua_concat(L, 2);
                lines = lua_tostring(L, -1);
            }
        }
    }
    fprintf(f, usage, lines);
    if (L) lua_close(L);
}

/* retort NAME ARGS...: rt.commands.NAME.run(args) */
static int lua_command(int argc, char **argv)
{
    lua_State *L = new_state();
    if (!L) return 1;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "retort");
    if (call_protected(L, 1, 0, NULL)) {
        lua_close(L);
        return 1;
    }
    lua_getglobal(L, "require");
    lua_pushliteral(L, "retort");
    lua_call(L, 1, 1); /* cached by now: cannot fail */
    lua_getfield(L, -1, "commands");
    lua_getfield(L, -1, argv[1]);
    if (!lua_istable(L, -1)) {
        lua_close(L);
        fprintf(stderr, "retort: unknown command '%s'\n\n", argv[1]);
        print_usage(stderr);
        return 2;
    }
    lua_getfield(L, -1, "run");
    lua_createtable(L, argc, 0);
    for (int i = 2; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    int rc = call_protected(L, 1, 1, argv[1]);
    lua_close(L);
    return rc;
}

static int run(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "retort run: needs a recipe file\n\n");
        print_usage(stderr);
        return 2;
    }
    lua_State *L = new_state();
    if (!L) return 1;
    /* arg: [0] = the recipe, [1..] = its arguments, [-1] = "retort run" */
    lua_createtable(L, argc, 2);
    lua_pushstring(L, argv[0]);
    lua_rawseti(L, -2, -1);
    for (int i = 2; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 2);
    }
    lua_setglobal(L, "arg");
    lua_pushcfunction(L, msghandler);
    int status = luaL_loadfilex(L, argv[2], "t");
    if (status == LUA_OK) {
        for (int i = 3; i < argc; i++) lua_pushstring(L, argv[i]);
        status = lua_pcall(L, argc - 3, 0, 1);
    }
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        fflush(stdout);
        fprintf(stderr, "retort: %s\n", msg ? msg : "(error without a message)");
    }
    lua_close(L);
    return status == LUA_OK ? 0 : 1;
}

static int plugins(int argc, char **argv)
{
    rt_ctx *ctx = rt_ctx_new();
    rt_registry *reg = rt_registry_new();
    if (!ctx || !reg) {
        fprintf(stderr, "retort: out of memory\n");
        return 1;
    }
    int rc = 0;
    if (rt_registry_load_default(reg, ctx)) fprintf(stderr, "retort: warning: %s\n", rt_ctx_message(ctx));
    if (argc < 3) {
        printf("plugins (built-in folder %s):\n", rt_builtin_plugin_dir());
        static const rt_kind kinds[] = {RT_KIND_TEACHER, RT_KIND_STUDENT, RT_KIND_LOSS};
        static const char *const headings[] = {"teachers", "students", "losses"};
        for (int k = 0; k < 3; k++) {
            printf("%s:\n", headings[k]);
            for (int i = 0; i < rt_registry_count(reg); i++) {
                const rt_plugin_desc *d = rt_registry_at(reg, i);
                if (d->kind == kinds[k]) printf("  %-14s %-7s %s\n", d->name, d->version, d->summary);
            }
        }
        printf("\n'retort plugins NAME' shows a plugin's options.\n");
    } else {
        int found = 0;
        for (int i = 0; i < rt_registry_count(reg); i++) {
            const rt_plugin_desc *d = rt_registry_at(reg, i);
            if (!strcmp(d->name, argv[2])) {
                if (found++) printf("\n");
                rt_options_print_help(d, stdout);
                /* A student's named features (for feature losses), as
                 * its default options build it. */
                rt_instance *in = NULL;
                const char *fn[512];
                int nf = d->kind == RT_KIND_STUDENT && !rt_instance_create(reg, ctx, d->kind, d->name, NULL, &in)
                             ? rt_instance_features(in, fn, 512)
                             : 0;
                if (nf > 0) {
                    printf("  features (with the default options):");
                    for (int k = 0; k < nf && k < 512; k++) printf("%s%s", k % 6 ? ", " : "\n    ", fn[k]);
                    printf("\n");
                }
                rt_instance_release(in);
                printf("  file: %s\n", rt_registry_path_at(reg, i));
            }
        }
        if (!found) {
            const rt_plugin_desc *d = NULL;
            for (int k = 1; k <= 3 && !d; k++) d = rt_registry_find(reg, ctx, (rt_kind)k, argv[2]);
            fprintf(stderr, "retort plugins: no plugin '%s'; 'retort plugins' lists them\n", argv[2]);
            rc = 1;
        }
    }
    rt_registry_free(reg);
    rt_ctx_free(ctx);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        print_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("retort %s (plugin ABI %d.%d, %s, OpenBLAS %s, %d threads)\n", RT_VERSION, RT_ABI_MAJOR, RT_ABI_MINOR,
               LUA_RELEASE, rt_blas_core(), rt_get_threads());
        return 0;
    }
    if (!strcmp(argv[1], "run")) return run(argc, argv);
    if (!strcmp(argv[1], "plugins")) return plugins(argc, argv);
    return lua_command(argc, argv);
}
